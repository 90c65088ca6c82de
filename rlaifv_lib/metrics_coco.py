"""CHAIR for COCO-style vocabularies: the same metric on real-model outputs with your own ground truth.

CHAIR (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"): the words of a
response are mapped to the 80 COCO object categories through a synonym list; plural forms are
reduced to the singular and two-word names ("traffic light", "hot dog", "teddy bear") are
matched before single words, so "hot dog" is food, not an animal. Then
CHAIR_i = hallucinated mentions / all mentions (repeats counted) and
CHAIR_s = responses with >= 1 hallucinated mention / all responses. Object HalBench (RLHF-V /
RLAIF-V) reports the response-level rate over the responses that mention at least one object
(``chair_s_halbench``). The synonym map below is a compact one written for this tutorial, not
the original CHAIR list; pass your own ``vocab`` (phrase -> category) to change it.

Known limits, shared with the original CHAIR: words are matched out of context, so the colour
"orange" counts as the fruit and a computer "mouse" as the COCO category ``mouse``.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from .hallucination import chair

__all__ = [
    "COCO_CATEGORIES",
    "COCO_SYNONYMS",
    "IRREGULAR_PLURALS",
    "COCO_VOCAB",
    "make_vocab",
    "object_vocab",
    "singular_forms",
    "coco_mentions",
    "normalise_truth",
    "coco_chair",
]

# category -> synonyms (singular forms; the category name itself is always included)
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("people", "man", "woman", "boy", "girl", "child", "kid", "baby", "guy", "lady",
               "gentleman", "adult", "teenager", "player", "pedestrian", "skier", "surfer",
               "skateboarder", "snowboarder", "rider", "biker", "cyclist", "policeman", "worker",
               "chef", "tourist", "spectator", "toddler", "infant"),
    "bicycle": ("bike",),
    "car": ("automobile", "sedan", "taxi", "cab", "suv", "jeep", "van"),
    "motorcycle": ("motorbike", "motor bike", "scooter", "moped"),
    "airplane": ("plane", "aeroplane", "jet", "airliner", "aircraft"),
    "bus": ("minibus", "trolley"),
    "train": ("locomotive", "tram", "subway"),
    "truck": ("pickup", "lorry", "firetruck", "fire truck"),
    "boat": ("ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "raft"),
    "traffic light": ("stoplight", "stop light", "traffic signal"),
    "fire hydrant": ("hydrant",),
    "stop sign": (),
    "parking meter": ("meter",),
    "bench": ("pew",),
    "bird": ("pigeon", "seagull", "gull", "duck", "goose", "parrot", "sparrow", "eagle", "owl", "swan"),
    "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup", "doggy"),
    "horse": ("pony", "foal", "stallion", "mare"),
    "sheep": ("lamb",),
    "cow": ("cattle", "bull", "calf", "ox"),
    "elephant": (),
    "bear": ("grizzly",),
    "zebra": (),
    "giraffe": (),
    "backpack": ("rucksack", "knapsack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "bag", "clutch"),
    "tie": ("necktie", "bow tie"),
    "suitcase": ("luggage", "suit case"),
    "frisbee": ("flying disc",),
    "skis": ("ski",),
    "snowboard": (),
    "sports ball": ("ball", "football", "soccer ball", "baseball", "basketball", "tennis ball", "volleyball"),
    "kite": (),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board",),
    "tennis racket": ("racket", "racquet"),
    "bottle": (),
    "wine glass": ("wineglass",),
    "cup": ("mug", "teacup"),
    "fork": (),
    "knife": (),
    "spoon": (),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": ("burger", "hamburger"),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog",),
    "pizza": (),
    "donut": ("doughnut",),
    "cake": ("cupcake",),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("plant", "houseplant", "flowerpot"),
    "bed": (),
    "dining table": ("table",),
    "toilet": (),
    "tv": ("television", "tv set", "monitor"),
    "laptop": ("notebook computer",),
    "mouse": (),
    "remote": ("remote control", "controller"),
    "keyboard": (),
    "cell phone": ("phone", "cellphone", "mobile phone", "smartphone", "telephone"),
    "microwave": (),
    "oven": ("stove",),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge",),
    "book": (),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("teddy", "stuffed animal"),
    "hair drier": ("hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("tooth brush",),
}  # fmt: skip
COCO_CATEGORIES: tuple[str, ...] = tuple(COCO_SYNONYMS)

IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "calves": "calf", "knives": "knife",
    "feet": "foot", "teeth": "tooth", "sheep": "sheep", "cattle": "cattle", "skis": "skis",
    "scissors": "scissors", "gentlemen": "gentleman", "policemen": "policeman", "ladies": "lady",
    "buses": "bus", "busses": "bus",
}  # fmt: skip

_WORD = re.compile(r"[a-z]+")
_MAX_WORDS = 3  # longest phrase in a vocabulary that is tried


def make_vocab(synonyms: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """A phrase -> category map from category -> synonyms (each category also names itself)."""
    vocab: dict[str, str] = {}
    for cat, words in synonyms.items():
        for phrase in (cat, *words):
            vocab[" ".join(_WORD.findall(phrase.lower()))] = cat
    return vocab


COCO_VOCAB: dict[str, str] = make_vocab(COCO_SYNONYMS)


def object_vocab(names: Iterable[str]) -> dict[str, str]:
    """A phrase -> category map for images of anything, made of the object names of a prompt file.

    A name that is a COCO category or synonym (plurals included) stands for that category and brings all of
    its synonyms along; any other name is a category of its own. Only these names count as objects, so
    images of anything — not only COCO's 80 categories — can be evaluated.

    Example: ``object_vocab(["puppies", "triangle"])`` maps "dog", "puppy", "doggy", ... to "dog" and
    "triangle" to "triangle".
    """
    vocab: dict[str, str] = {}
    for name in names:
        words = _WORD.findall(name.lower())
        if not words:
            continue
        phrases = [" ".join([*words[:-1], w]) for w in singular_forms(words[-1])]
        cat = next((COCO_VOCAB[p] for p in phrases if p in COCO_VOCAB), None)
        if cat is None:  # its own category, under its most likely singular form
            key = phrases[1] if len(phrases) > 1 else phrases[0]
            vocab[key] = key
        else:
            vocab.update(make_vocab({cat: [p for p, c in COCO_VOCAB.items() if c == cat]}))
    return vocab


def singular_forms(word: str) -> list[str]:
    """Candidate singular forms of a word, most likely first (the word itself comes first)."""
    out = [word]
    if word in IRREGULAR_PLURALS:
        out.append(IRREGULAR_PLURALS[word])
    elif word.endswith("ies") and len(word) > 4:
        out += [word[:-3] + "y", word[:-1]]
    elif word.endswith("ves") and len(word) > 4:
        out += [word[:-3] + "fe", word[:-3] + "f", word[:-1]]
    elif word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh", "o")):
        out += [word[:-2], word[:-1]]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 2:
        out.append(word[:-1])
    return out


def coco_mentions(text: str, vocab: Mapping[str, str] | None = None) -> list[str]:
    """COCO categories named in ``text``, in order, repeats kept; longest phrases match first.

    Example: ``coco_mentions("Two men eat hot dogs near a dog.")`` -> ``["person", "hot dog", "dog"]``.
    """
    vocab = COCO_VOCAB if vocab is None else vocab
    words = _WORD.findall(text.lower())
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            head = " ".join(words[i : i + n - 1])
            cat = next((vocab[p] for w in singular_forms(words[i + n - 1]) if (p := f"{head} {w}".strip()) in vocab), None)
            if cat is not None:
                out.append(cat)
                i += n
                break
        else:
            i += 1
    return out


def normalise_truth(truth: Iterable[str], vocab: Mapping[str, str] | None = None) -> set[str]:
    """Ground-truth objects as categories: synonyms and plurals mapped, unknown names kept lower-cased."""
    vocab = COCO_VOCAB if vocab is None else vocab
    cats = set(vocab.values())
    out: set[str] = set()
    for item in truth:
        name = item.lower().strip()
        found = coco_mentions(name, vocab)
        out.add(name if name in cats else (found[0] if len(found) == 1 else name))
    return out


def coco_chair(texts: Sequence[str], truths: Sequence[Iterable[str]], vocab: Mapping[str, str] | None = None) -> dict[str, float]:
    """CHAIR_i, CHAIR_s, Object HalBench's CHAIR_s over responses with objects, coverage and counts.

    Args:
        texts: the responses.
        truths: per response, the objects in its image (categories or any synonym/plural of them).
        vocab: phrase -> category map; defaults to ``COCO_VOCAB`` (80 COCO categories).

    Returns: ``chair_i``, ``chair_s``, ``chair_s_halbench``, ``coverage``, ``mean_words``,
    ``n_mentions``, ``n_hallucinated``, ``n_responses``, ``n_responses_with_objects``.
    """
    vocab = COCO_VOCAB if vocab is None else vocab
    if len(texts) != len(truths):
        raise ValueError(f"got {len(texts)} texts but {len(truths)} ground-truth sets; give one per response")
    truth_sets = [normalise_truth(t, vocab) for t in truths]
    mentions = [coco_mentions(t, vocab) for t in texts]
    by_text = dict(zip(texts, mentions))
    metrics: dict[str, float] = chair(texts, truth_sets, mentions_fn=lambda t: by_text[t])
    with_objects = [(m, truth) for m, truth in zip(mentions, truth_sets) if m]
    hallucinated = sum(any(x not in truth for x in m) for m, truth in with_objects)
    metrics["chair_s_halbench"] = hallucinated / len(with_objects) if with_objects else 0.0
    metrics["n_responses"] = len(texts)
    metrics["n_responses_with_objects"] = len(with_objects)
    return metrics
