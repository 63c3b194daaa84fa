"""Neural speech codec with any registered quantizer in the bottleneck.

    wav (B, 1, S) -> SEANet encoder -> z (B, dim, T) -> quantizer -> decoder -> wav (B, 1, S)

``T = S / hop_length`` with ``hop_length = prod(strides)``: 16 kHz with strides (2, 4, 5, 8) gives
320 samples a token, 50 tokens/s; 24 kHz with the same strides gives 75 tokens/s (the paper's
WavTokenizer setting). Inputs of any length are zero-padded to a multiple of the hop and the
output trimmed back, so ``forward`` returns exactly the input's length.

Encoder: SEANet (Tagliasacchi et al. 2020; EnCodec's, Défossez et al. 2022): a 7-tap conv, then per
stride dilated residual units and a strided conv doubling the width, then residual blocks at the
token rate, optionally EnCodec's two-layer LSTM with a skip (``lstm_layers``; WavTokenizer and the
official SimVQ audio encoder have it), and a 7-tap conv to ``dim``. Decoders:

``"vocos"``       Vocos (Siuzdak 2023), as the official SimVQ audio recipe (via WavTokenizer) uses:
                  ConvNeXt blocks at the token rate predicting a log-magnitude and a phase per STFT
                  frame, then ``torch.istft`` (hop = the codec hop, n_fft = 4 hops unless
                  ``decoder_n_fft`` says otherwise). All its convs
                  run at 50-75 frames/s, so it is cheap on a CPU.
``"transposed"``  the SEANet mirror: transposed convs halving the width per stride.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quantizers import build_quantizer

# ----------------------------------------------------------------------------- blocks


def variance_preserving(conv: nn.Conv1d | nn.ConvTranspose1d, *, weight_norm: bool) -> nn.Module:
    """``conv`` with weights ~ N(0, 1 / fan_in) and zero biases, then weight-normalised (as SEANet
    and EnCodec) when asked.

    Why: with torch's default init each conv shrinks the signal's variance about threefold while
    its biases add a constant, so after the encoder's ~10 convs the latents of 1 s of speech barely
    vary from token to token around a large common offset, and all 400 tokens of a batch of eight
    clips fall on 2-4 of 4,096 codes (measured for simvq and vq); training with the quantizer
    loss weighted 1000 then never leaves those codes. With this init they hit ~310-340 distinct codes.
    """
    fan_in: float = conv.weight.shape[1] * conv.weight.shape[2]
    if isinstance(conv, nn.ConvTranspose1d):  # weight (in, out, k): each output sees in * k / stride taps
        fan_in = conv.weight.shape[0] * conv.weight.shape[2] / conv.stride[0]
    nn.init.normal_(conv.weight, std=fan_in**-0.5)
    assert conv.bias is not None  # every conv built here keeps torch's default bias=True
    nn.init.zeros_(conv.bias)
    return nn.utils.parametrizations.weight_norm(conv) if weight_norm else conv


def conv1d(in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1, weight_norm: bool = True) -> nn.Module:
    """Length-preserving ("same", odd kernel) conv."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
    return variance_preserving(conv, weight_norm=weight_norm)


class ResidualUnit(nn.Module):
    """SEANet residual unit: ELU, dilated k-tap conv to width/2, ELU, 1x1 conv back; identity skip."""

    def __init__(self, width: int, *, dilation: int = 1, kernel_size: int = 3, weight_norm: bool = True):
        super().__init__()
        hidden = max(1, width // 2)
        self.body = nn.Sequential(
            nn.ELU(),
            conv1d(width, hidden, kernel_size, dilation=dilation, weight_norm=weight_norm),
            nn.ELU(),
            conv1d(hidden, width, 1, weight_norm=weight_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class StridedConv(nn.Module):
    """Conv with kernel ``2 * stride``: ``(B, C, L) -> (B, C', L / stride)`` exactly for L a
    multiple of ``stride`` (``stride // 2`` zeros on the left, the rest on the right)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, weight_norm: bool = True):
        super().__init__()
        self.conv = variance_preserving(nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride), weight_norm=weight_norm)
        self.padding = (stride // 2, stride - stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.padding))


class StridedTransposedConv(nn.Module):
    """Transposed conv with kernel ``2 * stride``: ``(B, C, L) -> (B, C', L * stride)`` exactly
    (the ``stride`` extra samples trimmed as ``StridedConv`` padded them)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, weight_norm: bool = True):
        super().__init__()
        self.conv = variance_preserving(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride),
                                        weight_norm=weight_norm)
        self.trim = (stride // 2, stride - stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., self.trim[0] : y.shape[-1] - self.trim[1]]


class SkipLSTM(nn.Module):
    """EnCodec's ``SLSTM``: a unidirectional ``num_layers``-layer LSTM over the frames of ``(B, C, T)``
    (width C in and out) plus the input."""

    def __init__(self, width: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(width, width, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        frames = x.permute(2, 0, 1)  # (T, B, C): nn.LSTM's default layout
        y, _ = self.lstm(frames)
        return (y + frames).permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """``(B, 1, S) -> (B, dim, S / prod(strides))``; the width doubles at every stride."""

    def __init__(self, *, channels: int, strides, dim: int, residual_layers: int, bottleneck_blocks: int, weight_norm: bool,
                 lstm_layers: int = 0):
        super().__init__()
        layers: list[nn.Module] = [conv1d(1, channels, 7, weight_norm=weight_norm)]
        width = channels
        for stride in strides:
            layers += [ResidualUnit(width, dilation=3**i, weight_norm=weight_norm) for i in range(residual_layers)]
            layers += [nn.ELU(), StridedConv(width, 2 * width, stride, weight_norm=weight_norm)]
            width *= 2
        layers += [ResidualUnit(width, weight_norm=weight_norm) for _ in range(bottleneck_blocks)]
        layers += [SkipLSTM(width, lstm_layers)] if lstm_layers else []
        layers += [nn.ELU(), conv1d(width, dim, 7, weight_norm=weight_norm)]
        self.layers = nn.Sequential(*layers)
        self.width = width

    def forward(self, wav: Tensor) -> Tensor:
        return self.layers(wav)


class TransposedDecoder(nn.Module):
    """SEANet decoder, the encoder's mirror: ``(B, dim, T) -> (B, 1, T * prod(strides))``."""

    def __init__(self, *, channels: int, strides, dim: int, residual_layers: int, bottleneck_blocks: int, weight_norm: bool):
        super().__init__()
        width = channels * 2 ** len(strides)
        layers: list[nn.Module] = [conv1d(dim, width, 7, weight_norm=weight_norm)]
        layers += [ResidualUnit(width, weight_norm=weight_norm) for _ in range(bottleneck_blocks)]
        for stride in reversed(tuple(strides)):
            layers += [nn.ELU(), StridedTransposedConv(width, width // 2, stride, weight_norm=weight_norm)]
            width //= 2
            layers += [ResidualUnit(width, dilation=3**i, weight_norm=weight_norm) for i in range(residual_layers)]
        layers += [nn.ELU(), conv1d(width, 1, 7, weight_norm=weight_norm)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


class ConvNeXtBlock(nn.Module):
    """Vocos's ConvNeXt block (Liu et al. 2022, 1-D): depthwise 7-tap conv, LayerNorm, pointwise MLP
    (x3), layer scale initialised small so each block starts near the identity."""

    def __init__(self, width: int, *, layer_scale: float = 1e-6):
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 3 * width), nn.GELU(), nn.Linear(3 * width, width))
        self.scale = nn.Parameter(torch.full((width,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        y = self.depthwise(x).transpose(1, 2)
        y = self.mlp(self.norm(y)) * self.scale
        return x + y.transpose(1, 2)


class VocosDecoder(nn.Module):
    """``(B, dim, T) -> (B, 1, T * hop_length)``: ConvNeXt at the frame rate, then an iSTFT head.

    Each frame predicts ``n_fft // 2 + 1`` log-magnitudes and phases (``n_fft = 4 * hop_length`` by default);
    magnitudes are capped at exp(~4.6) = 100 as Vocos does, so an early blow-up cannot overflow.
    """

    window: Tensor

    def __init__(self, *, dim: int, hop_length: int, width: int, blocks: int, n_fft: int | None = None):
        super().__init__()
        n_fft = 4 * hop_length if n_fft is None else n_fft
        if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < hop_length or n_fft % 2:
            raise ValueError(f"decoder_n_fft must be an even integer >= the hop ({hop_length}), got {n_fft!r}")
        self.hop_length, self.n_fft = hop_length, n_fft
        self.embed = nn.Conv1d(dim, width, 7, padding=3)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(width, layer_scale=1 / max(1, blocks)) for _ in range(blocks)])
        self.final_norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, self.n_fft + 2)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        x = self.norm(self.embed(z).transpose(1, 2)).transpose(1, 2)
        x = self.final_norm(self.blocks(x).transpose(1, 2))
        log_magnitude, phase = self.head(x).float().transpose(1, 2).chunk(2, dim=1)  # (B, F, T) each
        magnitude = log_magnitude.exp().clamp_max(1e2)
        spectrum = torch.polar(magnitude, phase)
        with torch.autocast(device_type=z.device.type, enabled=False):
            wav = torch.istft(spectrum, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                              length=z.shape[-1] * self.hop_length)
        return wav.unsqueeze(1)


# ----------------------------------------------------------------------------- the codec

DECODERS = ("vocos", "transposed")


class AudioCodec(nn.Module):
    """Encoder, quantizer, decoder for mono waveforms ``(B, 1, S)`` in ``[-1, 1]``.

    Args:
        quantizer: registered name (``simvq.list_quantizers()``); built with ``channel_first=True``.
        codebook_size: number of codes K.
        quantizer_options: extra keyword options for ``build_quantizer`` (only those given are passed).
        sample_rate: of the waveforms (recorded so ``tokens_per_second`` and the tokenizer know it).
        strides: the encoder's downsampling factors; their product is ``hop_length``.
        channels: width of the first conv (doubles at every stride).
        dim: latent (code) dimension.
        residual_layers: dilated residual units (dilations 1, 3, 9, ...) per stride.
        bottleneck_blocks: residual units at the token rate before the quantizer (and after it in the
            transposed decoder; in the Vocos decoder its ConvNeXt blocks play that part).
        decoder: "vocos" (ConvNeXt + iSTFT) or "transposed" (SEANet mirror).
        decoder_width, decoder_blocks: the Vocos backbone's width and number of ConvNeXt blocks.
        weight_norm: weight-normalise the SEANet convs (as SEANet and EnCodec do).
        lstm_layers: EnCodec's LSTM (with a skip) at the end of the encoder, before its last conv; 0: none.
        decoder_n_fft: the Vocos head's STFT size; None: 4 hops (WavTokenizer's 1280 at hop 320).

    The defaults are tiny (0.89 M parameters: encoder 0.26 M, Vocos decoder 0.62 M; plus the quantizer)
    so a training step on 8 one-second clips takes ~1 s on one CPU core.
    """

    def __init__(
        self,
        *,
        quantizer: str = "simvq",
        codebook_size: int = 4096,
        quantizer_options: dict | None = None,
        sample_rate: int = 16000,
        strides=(2, 4, 5, 8),
        channels: int = 8,
        dim: int = 64,
        residual_layers: int = 1,
        bottleneck_blocks: int = 1,
        decoder: str = "vocos",
        decoder_width: int = 128,
        decoder_blocks: int = 4,
        weight_norm: bool = True,
        lstm_layers: int = 0,
        decoder_n_fft: int | None = None,
    ):
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if not strides or any(s < 1 for s in strides):
            raise ValueError(f"strides must be positive integers, got {strides}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.sample_rate = sample_rate
        self.strides = strides
        self.hop_length = math.prod(strides)
        stack = dict(channels=channels, strides=strides, dim=dim, residual_layers=residual_layers,
                     bottleneck_blocks=bottleneck_blocks, weight_norm=weight_norm)
        if isinstance(lstm_layers, bool) or not isinstance(lstm_layers, int) or lstm_layers < 0:
            raise ValueError(f"lstm_layers must be a non-negative integer, got {lstm_layers!r}")
        self.encoder = SEANetEncoder(**stack, lstm_layers=lstm_layers)
        self.decoder: VocosDecoder | TransposedDecoder
        if decoder == "vocos":
            self.decoder = VocosDecoder(dim=dim, hop_length=self.hop_length, width=decoder_width, blocks=decoder_blocks, n_fft=decoder_n_fft)
        else:
            self.decoder = TransposedDecoder(**stack)
        options = {**(quantizer_options or {}), "channel_first": True}  # latents are (B, dim, T)
        self.quantizer = build_quantizer(quantizer, dim=dim, codebook_size=codebook_size, **options)

    @property
    def tokens_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def _check_wav(self, wav: Tensor) -> None:
        if not isinstance(wav, Tensor) or not wav.is_floating_point():
            raise TypeError(f"wav must be a floating-point tensor (B, 1, S), got {type(wav).__name__}"
                            + (f" of dtype {wav.dtype}" if isinstance(wav, Tensor) else ""))
        if wav.ndim != 3 or wav.shape[1] != 1 or wav.shape[2] == 0:
            raise ValueError(f"wav must have shape (B, 1, S) with S >= 1 (mono), got {tuple(wav.shape)}")

    def num_tokens(self, num_samples: int) -> int:
        """Tokens for ``num_samples`` samples (padded up to a whole hop)."""
        return -(-num_samples // self.hop_length)

    def encode_latents(self, wav: Tensor) -> Tensor:
        """Continuous latents ``(B, dim, T)``, ``T = ceil(S / hop_length)`` (zero-padded at the end)."""
        self._check_wav(wav)
        padding = self.num_tokens(wav.shape[-1]) * self.hop_length - wav.shape[-1]
        return self.encoder(F.pad(wav, (0, padding)))

    def decode_latents(self, quantized: Tensor) -> Tensor:
        """Waveforms ``(B, 1, T * hop_length)`` (not clamped) from quantized ``(B, dim, T)``."""
        return self.decoder(quantized)

    def token_mask(self, lengths, num_samples: int) -> Tensor:
        """``(B, num_tokens(num_samples))`` bool for utterances of ``lengths`` samples ``(B,)``
        zero-padded to ``num_samples``: True at the frames of real audio, ``t < ceil(length / hop_length)``."""
        lengths = torch.as_tensor(lengths)
        if lengths.ndim != 1 or lengths.numel() == 0 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be (B,) integer sample counts, got {lengths.dtype} of shape {tuple(lengths.shape)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > num_samples:
            raise ValueError(f"lengths must lie in [1, {num_samples}] samples (the padded length), got {lengths.tolist()}")
        frames = -(-lengths // self.hop_length)
        return torch.arange(self.num_tokens(num_samples), device=lengths.device) < frames[:, None]

    def _mask(self, lengths, wav: Tensor) -> Tensor | None:
        if lengths is None:
            return None
        mask = self.token_mask(lengths, wav.shape[-1])
        if mask.shape[0] != wav.shape[0]:
            raise ValueError(f"lengths must give one length per utterance of wav {tuple(wav.shape)}, got {mask.shape[0]}")
        return mask.to(wav.device)

    def forward(self, wav: Tensor, *, lengths: Tensor | None = None):
        """``(reconstruction (B, 1, S), QuantizerOutput)``; ``out.codes`` is ``(B, T)``. ``lengths``:
        the true lengths ``(B,)`` of zero-padded utterances (``pad_collate``); the frames past each
        one's end are masked in the quantizer (``token_mask``): codes -1, zero vectors into the
        decoder, no share of its loss, usage or statistics. None: every frame is real."""
        latents = self.encode_latents(wav)
        out = self.quantizer(latents, mask=self._mask(lengths, wav))
        return self.decode_latents(out.quantized)[..., : wav.shape[-1]], out

    @torch.no_grad()
    def encode(self, wav: Tensor, *, lengths: Tensor | None = None) -> Tensor:
        """Codes ``(B, T)`` (``(B, T, stages)`` for multi-stage quantizers); -1 past ``lengths`` (as in ``forward``)."""
        latents = self.encode_latents(wav)
        return self.quantizer.encode(latents, mask=self._mask(lengths, wav))

    @torch.no_grad()
    def decode(self, codes: Tensor, *, length: int | None = None, mask: Tensor | None = None) -> Tensor:
        """Waveforms ``(B, 1, T * hop_length)`` in ``[-1, 1]`` from codes (trimmed to ``length`` if
        given); ``mask`` (``(B, T)``, ``token_mask``): frames where it is False decode from zero vectors."""
        wav = self.decode_latents(self.quantizer.decode(codes, mask=mask)).clamp(-1, 1)
        return wav if length is None else wav[..., :length]

    @torch.no_grad()
    def reconstruct(self, wav: Tensor) -> Tensor:
        """``decode(encode(wav))`` trimmed to the input's length, ``(B, 1, S)``. A quantizer whose codes
        need more than the indices to decode (``decode_inputs``, e.g. sc_vae's coefficients) is run
        forward instead, which gives the same values in eval mode."""
        if self.quantizer.decode_inputs:
            return self(wav)[0].clamp(-1, 1)
        return self.decode(self.encode(wav), length=wav.shape[-1])


__all__ = ["AudioCodec", "ConvNeXtBlock", "DECODERS", "SEANetEncoder", "SkipLSTM", "TransposedDecoder", "VocosDecoder"]
