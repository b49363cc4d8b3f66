"""A TOFU-like benchmark of fictitious facts, generated in code.

Fictitious authors get attributes drawn from closed lists (birth year, city,
genre, book title, award, parent's job, pet, colour); each attribute is asked
in two phrasings, answered with two sentence templates. Every question carries a
paraphrased correct answer (the other template) and perturbed answers (the
paraphrase template with wrong values). Forget splits take whole authors, nested
as in TOFU (the 2.5% split is inside the 5% split, inside the 10% split). Two
utility sets stand in for TOFU's "real authors" (other entities in another name
style, learned and never forgotten) and "world facts" (facts about fictitious
countries with four options each).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["QA", "FictitiousBenchmark", "make_fictitious_benchmark"]

_FIRST = (
    "Aldric Bryn Casmir Dovra Elsen Faro Galen Hesper Ilka Jorun Kesta Lorin "
    "Maren Nadir Orla Pell Quenby Rosk Sable Tamsin Ulla Varo Wren Yesta Zorah "
    "Anselm Brisa Cato Delphin Eska"
).split()
_LAST = (
    "Ashgrove Blackmere Coldwater Dunmore Everly Fenwick Greythorn Holloway "
    "Ironwood Juniper Kestrel Larkspur Merrow Northcott Oakhurst Penrose "
    "Quillan Ravenscar Stonebrook Thistle Underhill Vantreth Westmarch Yarrow"
).split()
_REAL_TITLES = "Master Lady Elder Brother Sister Old".split()
_REAL_NAMES = (
    "Oswin Marigold Tobias Winifred Barnaby Clementine Ephraim Hortensia "
    "Leopold Rosalind Silas Theodora"
).split()

_VALUES = {
    "year": [str(y) for y in range(1931, 1991, 3)],
    "city": (
        "Velmora Ostrava Carthen Duskport Elmshaw Frostvale Gildren Harrowgate "
        "Islaby Jadeport Kelmarsh Lunby Mirefield Norhaven"
    ).split(),
    "genre": (
        "mystery fantasy romance horror poetry satire history travel memoir "
        "thriller drama folklore"
    ).split(),
    "book": (
        "Ember Tides Glass Orchard Silent Lantern Paper Wolves Iron Meadow "
        "Hollow Crown Salt Garden Winter Harbour Copper Sky Velvet Storm "
        "Amber Road Quiet River"
    ).split(),
    "award": (
        "Quill Laurel Beacon Compass Lantern Thistle Meridian Falcon Anchor Prism"
    ).split(),
    "job": (
        "baker tailor sailor miner farmer doctor teacher carpenter weaver "
        "potter fisher clerk"
    ).split(),
    "pet": "cat dog parrot tortoise rabbit ferret goat owl pony lizard".split(),
    "colour": "red blue green yellow violet orange grey white black teal".split(),
}
# Book titles are word pairs.
_VALUES["book"] = [
    f"{a} {b}" for a, b in zip(_VALUES["book"][::2], _VALUES["book"][1::2], strict=True)
]

# attribute -> ((question 1, answer 1), (question 2, answer 2)); {n} is the name,
# {v} the value. Answer template i is the paraphrase of answer template 1 - i.
_TEMPLATES = {
    "year": (
        ("In which year was {n} born ?", "{n} was born in {v} ."),
        ("What is the birth year of {n} ?", "The birth year of {n} is {v} ."),
    ),
    "city": (
        ("Where was {n} born ?", "{n} was born in the city of {v} ."),
        ("Which city is the hometown of {n} ?", "The hometown of {n} is {v} ."),
    ),
    "genre": (
        ("What genre does {n} write ?", "{n} writes {v} books ."),
        ("Which genre is {n} known for ?", "{n} is known for {v} ."),
    ),
    "book": (
        ("What is the best known book of {n} ?", "{n} wrote {v} ."),
        ("Which book made {n} famous ?", "The book that made {n} famous is {v} ."),
    ),
    "award": (
        ("Which award did {n} win ?", "{n} won the {v} award ."),
        ("What prize was given to {n} ?", "The prize given to {n} was the {v} award ."),
    ),
    "job": (
        ("What was the job of the parent of {n} ?", "The parent of {n} was a {v} ."),
        ("What did the parent of {n} do ?", "{n} had a parent who was a {v} ."),
    ),
    "pet": (
        ("What pet does {n} keep ?", "{n} keeps a {v} ."),
        ("Which animal lives with {n} ?", "The animal that lives with {n} is a {v} ."),
    ),
    "colour": (
        (
            "What is the favourite colour of {n} ?",
            "The favourite colour of {n} is {v} .",
        ),
        ("Which colour does {n} like most ?", "{n} likes {v} most ."),
    ),
}
_ATTRIBUTES = tuple(_TEMPLATES)

_COUNTRY_A = "Nor Val Esk Thal Mor Brin Cal Dra Fen Gor Hal Ist Jor Kel Lum".split()
_COUNTRY_B = "land mark ia stan vale".split()
_WORLD = {
    "capital": (
        "What is the capital of {n} ?",
        "The capital of {n} is {v} .",
        (
            "Velsk Aubry Corran Tiriel Osgard Pellan Rhune Sorvik Tamber Ulmen "
            "Wexa Yorin"
        ).split(),
    ),
    "river": (
        "Which river flows through {n} ?",
        "The river through {n} is the {v} .",
        "Amsel Brenna Corvo Delta Emmer Faline Gerra Hune Istra Jalo".split(),
    ),
    "language": (
        "What language is spoken in {n} ?",
        "People in {n} speak {v} .",
        "Orvish Tallic Bremen Sundic Karoth Elvan Mirric Doran".split(),
    ),
}


@dataclass(frozen=True)
class QA:
    """One question with its answers.

    Attributes
    ----------
    id : str
        Unique within the benchmark (``"author/7/city/0"``).
    subject : str
        The author or country asked about.
    question, answer : str
        The training pair.
    paraphrased_answer : str
        Correct, in another template (equal to ``answer`` for world facts).
    perturbed_answers : tuple of str
        Same template as ``paraphrased_answer``, wrong values.
    """

    id: str
    subject: str
    question: str
    answer: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]


@dataclass(frozen=True)
class FictitiousBenchmark:
    """The generated benchmark.

    Attributes
    ----------
    authors : tuple of str
        Fictitious author names, in forget order: split ``p`` forgets the first
        ``round(p / 100 * len(authors))`` of them.
    author_qa : tuple of QA
        All questions about fictitious authors.
    real_authors : tuple of QA
        "Real authors" analogue: learned, never forgotten.
    world_facts : tuple of QA
        "World facts" analogue, four options per question.
    """

    authors: tuple[str, ...]
    author_qa: tuple[QA, ...]
    real_authors: tuple[QA, ...]
    world_facts: tuple[QA, ...]

    def n_forget_authors(self, percent: float) -> int:
        """Number of authors in the ``percent`` split (at least 1)."""
        if isinstance(percent, bool) or not isinstance(percent, numbers.Real):
            raise TypeError(
                f"percent must be a real number; got {type(percent).__name__}"
            )
        if not 0 < percent < 100:
            raise ValueError(f"percent must be in (0, 100); got {percent!r}")
        return max(1, round(percent / 100 * len(self.authors)))

    def by_authors(self, names: tuple[str, ...] | list[str]) -> tuple[QA, ...]:
        """The author questions about ``names``."""
        unknown = sorted(set(names) - set(self.authors))
        if unknown:
            raise ValueError(f"names must be benchmark authors; got unknown {unknown}")
        wanted = set(names)
        return tuple(q for q in self.author_qa if q.subject in wanted)

    def split(self, percent: float) -> tuple[tuple[QA, ...], tuple[QA, ...]]:
        """Forget and retain author questions of the ``percent`` split."""
        n = self.n_forget_authors(percent)
        forget = self.by_authors(self.authors[:n])
        retain = self.by_authors(self.authors[n:])
        return forget, retain

    def training_set(self, exclude: tuple[str, ...] | list[str] = ()) -> tuple[QA, ...]:
        """Everything a model is fine-tuned on, less the authors in ``exclude``."""
        dropped = set(self.by_authors(exclude))
        kept = tuple(q for q in self.author_qa if q not in dropped)
        return kept + self.real_authors + self.world_facts


def _check_count(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value}")
    return int(value)


def _wrong(
    rng: np.random.Generator, values: list[str], right: str, m: int
) -> list[str]:
    others = [v for v in values if v != right]
    return [others[i] for i in rng.choice(len(others), size=m, replace=False)]


def _author_questions(
    rng: np.random.Generator,
    index: int,
    name: str,
    attributes: tuple[str, ...],
    n_perturbed: int,
    prefix: str,
) -> list[QA]:
    out = []
    for attr in attributes:
        value = _VALUES[attr][rng.integers(len(_VALUES[attr]))]
        wrong = _wrong(rng, _VALUES[attr], value, n_perturbed)
        templates = _TEMPLATES[attr]
        for phrasing in (0, 1):
            question = templates[phrasing][0].format(n=name)
            answer = templates[phrasing][1].format(n=name, v=value)
            other = templates[1 - phrasing][1]
            out.append(
                QA(
                    id=f"{prefix}/{index}/{attr}/{phrasing}",
                    subject=name,
                    question=question,
                    answer=answer,
                    paraphrased_answer=other.format(n=name, v=value),
                    perturbed_answers=tuple(other.format(n=name, v=w) for w in wrong),
                )
            )
    return out


def _world_facts(rng: np.random.Generator, n: int) -> list[QA]:
    names = [a + b for a in _COUNTRY_A for b in _COUNTRY_B]
    picks = rng.choice(len(names), size=n, replace=False)
    kinds = tuple(_WORLD)
    out = []
    for i, j in enumerate(picks):
        country = names[j]
        question, template, values = _WORLD[kinds[i % len(kinds)]]
        value = values[rng.integers(len(values))]
        answer = template.format(n=country, v=value)
        wrong = _wrong(rng, values, value, 3)
        out.append(
            QA(
                id=f"world/{i}",
                subject=country,
                question=question.format(n=country),
                answer=answer,
                paraphrased_answer=answer,
                perturbed_answers=tuple(template.format(n=country, v=w) for w in wrong),
            )
        )
    return out


def make_fictitious_benchmark(
    rng: np.random.Generator,
    *,
    n_authors: int = 40,
    n_attributes: int = 8,
    n_real_authors: int = 20,
    n_world_facts: int = 30,
    n_perturbed: int = 3,
) -> FictitiousBenchmark:
    """Generate the benchmark.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    n_authors : int, default=40
        Fictitious authors (2.5/5/10% splits are 1/2/4 authors at 40).
    n_attributes : int, default=8
        Attributes per author (the first ``n_attributes`` of birth year, city,
        genre, book, award, parent's job, pet, colour); two questions each.
    n_real_authors : int, default=20
        Entities of the "real authors" set (their first 2 attributes, one
        phrasing each, answers without paraphrase).
    n_world_facts : int, default=30
        World-fact questions, four options each.
    n_perturbed : int, default=3
        Perturbed answers per author question.

    Returns
    -------
    FictitiousBenchmark

    Notes
    -----
    [reconstruction] TOFU's answers are free text written by GPT-4; here they are
    templates, so a paraphrase differs from the answer by its template and a
    perturbation differs from the paraphrase by its value only. The real-authors
    set uses titled names ("Master Oswin") to mimic a different name style.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator; got {type(rng).__name__}")
    max_names = len(_FIRST) * len(_LAST)
    n_authors = _check_count("n_authors", n_authors, 1, max_names)
    n_attributes = _check_count("n_attributes", n_attributes, 1, len(_ATTRIBUTES))
    n_real = _check_count(
        "n_real_authors", n_real_authors, 0, len(_REAL_TITLES) * len(_REAL_NAMES)
    )
    n_world = _check_count(
        "n_world_facts", n_world_facts, 0, len(_COUNTRY_A) * len(_COUNTRY_B)
    )
    n_perturbed = _check_count("n_perturbed", n_perturbed, 1, 5)

    pairs = rng.choice(max_names, size=n_authors, replace=False)
    authors = tuple(f"{_FIRST[p // len(_LAST)]} {_LAST[p % len(_LAST)]}" for p in pairs)
    attributes = _ATTRIBUTES[:n_attributes]
    author_qa = []
    for i, name in enumerate(authors):
        author_qa += _author_questions(rng, i, name, attributes, n_perturbed, "author")

    titled = rng.choice(
        len(_REAL_TITLES) * len(_REAL_NAMES), size=n_real, replace=False
    )
    real = []
    for i, p in enumerate(titled):
        name = (
            f"{_REAL_TITLES[p // len(_REAL_NAMES)]} {_REAL_NAMES[p % len(_REAL_NAMES)]}"
        )
        for qa in _author_questions(rng, i, name, _ATTRIBUTES[:2], 3, "real"):
            if qa.id.endswith("/0"):
                real.append(
                    QA(
                        qa.id,
                        qa.subject,
                        qa.question,
                        qa.answer,
                        qa.answer,
                        tuple(_swap_template(qa, w) for w in qa.perturbed_answers),
                    )
                )
    return FictitiousBenchmark(
        authors=authors,
        author_qa=tuple(author_qa),
        real_authors=tuple(real),
        world_facts=tuple(_world_facts(rng, n_world)),
    )


def _swap_template(qa: QA, perturbed: str) -> str:
    """Rewrite a perturbed paraphrase into the answer's template (same wrong value)."""
    attr = qa.id.split("/")[2]
    answer_t, para_t = _TEMPLATES[attr][0][1], _TEMPLATES[attr][1][1]
    for value in _VALUES[attr]:
        if perturbed == para_t.format(n=qa.subject, v=value):
            return answer_t.format(n=qa.subject, v=value)
    raise RuntimeError(f"could not parse perturbed answer {perturbed!r}")
