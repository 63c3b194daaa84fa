"""The corpus's text: ``speech_sentences``, short English sentences from a fixed list and a small
seeded grammar."""

from __future__ import annotations

import random

_SUBJECTS = (
    "the old sailor", "my neighbour", "a tired student", "the young doctor", "our teacher", "the small dog",
    "her brother", "the farmer", "a quiet child", "the baker", "his grandmother", "the new manager", "a stranger",
    "the pilot", "my best friend", "the gardener", "the girl next door", "a police officer", "the musician",
    "the cat", "the children", "two engineers", "the old man", "a nervous actor", "the librarian",
)
_VERBS = (
    "painted", "found", "carried", "opened", "cleaned", "bought", "sold", "forgot", "repaired", "dropped",
    "noticed", "borrowed", "wrapped", "measured", "described", "watched", "followed", "hid", "built", "lost",
)
_OBJECTS = (
    "a red umbrella", "the wooden box", "seven yellow apples", "an empty bottle", "the broken clock",
    "a heavy suitcase", "the blue bicycle", "a strange letter", "the kitchen window", "an old photograph",
    "three silver coins", "a warm blanket", "the garden gate", "a paper map", "the violin", "a jar of honey",
    "the last train ticket", "a pair of boots", "the morning newspaper", "a basket of fish",
)
_PLACES = (
    "near the harbour", "in the crowded market", "behind the church", "at the station", "under the bridge",
    "on the top shelf", "in the garden", "beside the river", "at the back of the shop", "in the village square",
    "on the kitchen table", "outside the museum", "in the dark cellar", "at the edge of the forest",
)
_TIMES = (
    "yesterday morning", "last winter", "after dinner", "before sunrise", "on Sunday", "at midnight",
    "during the storm", "every Tuesday", "in nineteen eighty four", "at half past seven", "two weeks ago",
)
_ADVERBS = ("quickly", "carefully", "slowly", "quietly", "happily", "suddenly", "proudly", "gently")
_QUESTION_WORDS = ("Why", "When", "Where", "How")
_FIXED_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "She sells sea shells by the sea shore.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "The rainbow is a division of white light into many beautiful colours.",
    "A large size in stockings is hard to sell.",
    "Is it going to rain this afternoon, or will the sun come out?",
    "Turn left at the second light, then keep going for about three miles.",
    "The meeting starts at nine fifteen, so don't be late.",
    "Could you read the numbers back to me: four, eight, fifteen, sixteen, twenty three, forty two.",
    "Thank you very much for your patience.",
    "I never said she stole my money.",
    "Wow, that was a surprisingly good film!",
    "Oh no, I left my keys in the car again.",
    "Thirty three thousand people attended the concert on the twelfth of June.",
    "Whether the weather is warm or cold, we will go outside.",
    "The judge awarded the prize to the youngest singer.",
    "Every morning, the birds sing loudly outside my window.",
)


def speech_sentences(count: int = 400, *, seed: int = 0) -> list[str]:
    """``count`` distinct short English sentences: a fixed set of pangrams and phonetically varied
    sentences, then statements, questions and commands drawn from a small grammar with
    ``random.Random(seed)``. The same arguments always give the same list."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    rng = random.Random(seed)
    sentences = list(_FIXED_SENTENCES[:count])
    seen = set(sentences)
    forms = (
        lambda: f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}.",
        lambda: f"{rng.choice(_TIMES)}, {rng.choice(_SUBJECTS)} {rng.choice(_ADVERBS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.",
        lambda: f"{rng.choice(_QUESTION_WORDS)} did {rng.choice(_SUBJECTS)} leave {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}?",
        lambda: f"Did {rng.choice(_SUBJECTS)} really say that {rng.choice(_TIMES)}?",
        lambda: f"Please put {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}, and do it {rng.choice(_ADVERBS)}.",
        lambda: f"I think {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)}.",
        lambda: (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, "
                 f"but {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."),
        lambda: f"There were {rng.randint(2, 99)} people {rng.choice(_PLACES)} {rng.choice(_TIMES)}.",
    )
    while len(sentences) < count:
        sentence = rng.choice(forms)()
        sentence = sentence[0].upper() + sentence[1:]
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


__all__ = ["speech_sentences"]
