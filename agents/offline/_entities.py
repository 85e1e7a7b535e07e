"""Text helpers of the offline model: entities in a goal, words, token estimates, hashed vectors.

Pure functions, no network, no randomness: the offline model, the simulator and the
offline provider all count tokens and embed text through here, so their numbers agree.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Mapping

_NOT_TICKERS = frozenset(
    "I A AN AND OR THE OF TO IN ON AT FOR BY IS IT ME MY US UK EU NY ET PT AM PM OK "
    "UTC GMT USD EUR GBP JPY CEO CFO PDF CSV JSON HTML XML URL API AI LLM FAQ TODO "
    "ASAP FYI NOTE".split()
)
COMPANY_TICKERS: Mapping[str, str] = {
    "apple": "AAPL",
    "nvidia": "NVDA",
    "microsoft": "MSFT",
    "google": "GOOGL",
    "alphabet": "GOOGL",
    "amazon": "AMZN",
    "tesla": "TSLA",
    "meta": "META",
    "netflix": "NFLX",
    "intel": "INTC",
    "amd": "AMD",
    "ibm": "IBM",
}
FINANCE_WORDS = frozenset(
    "price prices stock stocks quote quotes share shares ticker tickers market trading "
    "worth valuation".split()
)
TIME_WORDS = frozenset("time clock date timezone".split())
CITY_TIMEZONES: Mapping[str, str] = {
    "tokyo": "Asia/Tokyo",
    "osaka": "Asia/Tokyo",
    "london": "Europe/London",
    "paris": "Europe/Paris",
    "berlin": "Europe/Berlin",
    "madrid": "Europe/Madrid",
    "rome": "Europe/Rome",
    "amsterdam": "Europe/Amsterdam",
    "zurich": "Europe/Zurich",
    "stockholm": "Europe/Stockholm",
    "moscow": "Europe/Moscow",
    "istanbul": "Europe/Istanbul",
    "new york": "America/New_York",
    "boston": "America/New_York",
    "toronto": "America/Toronto",
    "chicago": "America/Chicago",
    "denver": "America/Denver",
    "los angeles": "America/Los_Angeles",
    "san francisco": "America/Los_Angeles",
    "seattle": "America/Los_Angeles",
    "mexico city": "America/Mexico_City",
    "sao paulo": "America/Sao_Paulo",
    "singapore": "Asia/Singapore",
    "hong kong": "Asia/Hong_Kong",
    "shanghai": "Asia/Shanghai",
    "beijing": "Asia/Shanghai",
    "seoul": "Asia/Seoul",
    "mumbai": "Asia/Kolkata",
    "delhi": "Asia/Kolkata",
    "dubai": "Asia/Dubai",
    "sydney": "Australia/Sydney",
    "melbourne": "Australia/Melbourne",
    "cairo": "Africa/Cairo",
    "johannesburg": "Africa/Johannesburg",
    "utc": "UTC",
}
STOPWORDS = frozenset(
    "a an the of for to in on at by and or with from about into is are was be it its "
    "me my i you your we our us please can could would will should do does did get give "
    "show tell make let what whats which who how much many this that these those some "
    "any all then also just now's there here".split()
)

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9']*")
_TICKER = re.compile(r"(?<![\w$])\$?([A-Z]{1,5}(?:\.[A-Z])?)(?![\w])")
_IANA = re.compile(r"\b(?:[A-Z][a-z]+(?:_[A-Z][a-z]+)*)/[A-Z][A-Za-z_]+\b")
_ARITH_WORDS = (
    (re.compile("\\bmultiplied by\\b|\\btimes\\b|\u00d7", re.I), " * "),
    (re.compile("\\bdivided by\\b|\u00f7", re.I), " / "),
    (re.compile(r"\bto the power of\b|\^", re.I), " ** "),
    (re.compile(r"\bplus\b", re.I), " + "),
    (re.compile(r"\bminus\b", re.I), " - "),
    (re.compile(r"\bsquared\b", re.I), " ** 2"),
    (re.compile(r"(?<=\d)\s*x\s*(?=\d)"), " * "),
)
_ARITH_RUN = re.compile(r"[\d.\s()+\-*/%]+")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}")
_OPERATOR_BETWEEN = re.compile(r"[\d)]\s*(?:\*\*|[-+*/%])\s*[-(\d]")


def words(text: str) -> list[str]:
    """Lower-case words with a light plural/spelling normalisation, stopwords kept."""
    return [_normalise(w) for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


@functools.lru_cache(maxsize=8192)
def _normalise(word: str) -> str:
    word = word.lower().replace("summarize", "summarise").replace("'s", "")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tickers(text: str) -> list[str]:
    """Ticker symbols in order of appearance: `$X`, upper-case words, or company names."""
    found = [m.group(1) for m in _TICKER.finditer(text) if _could_be_ticker(m.group(1))]
    lowered = text.lower()
    for name, symbol in COMPANY_TICKERS.items():
        if re.search(rf"\b{name}\b", lowered):
            found.append(symbol)
    return _unique(found)


def _could_be_ticker(word: str) -> bool:
    """Not a common abbreviation, and not an English word typed in capitals."""
    lowered = word.lower()
    return word not in _NOT_TICKERS and lowered not in STOPWORDS | FINANCE_WORDS | TIME_WORDS


def has_finance_context(text: str) -> bool:
    return bool(FINANCE_WORDS & set(words(text))) or "$" in text


def has_time_context(text: str) -> bool:
    return bool(TIME_WORDS & {w.lower() for w in _WORD.findall(text)})


def timezone(text: str) -> str | None:
    """The IANA zone a goal names, directly (`Europe/Paris`) or through a city."""
    direct = _IANA.search(text)
    if direct:
        return direct.group(0)
    lowered = " ".join(w.lower() for w in _WORD.findall(text))
    for city, zone in CITY_TIMEZONES.items():
        if re.search(rf"\b{city}\b", lowered):
            return zone
    return None


def timezones(text: str) -> list[str]:
    """Every IANA zone a goal names, in the order it names them ("Tokyo, London and
    New York" gives three); a city inside a longer name ("York" in "New York") is not
    counted twice."""
    found: list[tuple[int, str]] = [(m.start(), m.group(0)) for m in _IANA.finditer(text)]
    taken = [range(m.start(), m.end()) for m in _IANA.finditer(text)]
    lowered = text.lower()
    for city, zone in sorted(CITY_TIMEZONES.items(), key=lambda item: -len(item[0])):
        pattern = r"\s+".join(re.escape(part) for part in city.split())
        for match in re.finditer(rf"\b{pattern}\b", lowered):
            if not any(match.start() in span for span in taken):
                found.append((match.start(), zone))
                taken.append(range(match.start(), match.end()))
    return _unique(zone for _, zone in sorted(found))


def place_of(text: str, zone: str) -> str | None:
    """The city `text` names for `zone`, as written ("New York" for America/New_York)."""
    lowered = text.lower()
    for city, known in sorted(CITY_TIMEZONES.items(), key=lambda item: -len(item[0])):
        if known != zone or city == "utc":
            continue
        pattern = r"\s+".join(re.escape(part) for part in city.split())
        if re.search(rf"\b{pattern}\b", lowered):
            return city.title()
    return None


# A place: capitalised words, or a word in a script without capitals ("東京").
_PLACE = re.compile(
    r"\b(?:in|at|for)\s+((?:[A-Z][\w'/-]*)(?:\s+[A-Z][\w'/-]*)*|[^\W\d_\u0000-\u024f]\w*)"
)
_NOT_PLACES = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday i".split()
)


def unknown_places(text: str) -> list[str]:
    """Places after "in" / "at" / "for" (capitalised, or in another script) that name no
    zone this model knows ("Atlantis", "東京"): a time asked for there has no answer
    here, and UTC would be a guess."""
    unknown = []
    for match in _PLACE.finditer(text):
        place = match.group(1)
        if place.lower() in _NOT_PLACES or place.upper() in ("UTC", "GMT"):
            continue
        if not timezones(place):
            unknown.append(place)
    return _unique(unknown)


def city(text: str) -> str | None:
    lowered = " ".join(w.lower() for w in _WORD.findall(text))
    for name in CITY_TIMEZONES:
        if name != "utc" and re.search(rf"\b{name}\b", lowered):
            return name.title()
    return None


def expression(text: str) -> str | None:
    """The longest arithmetic expression in `text`, number words turned into operators."""
    for pattern, replacement in _ARITH_WORDS:
        text = pattern.sub(replacement, text)
    candidates = [" ".join(run.split()) for run in _ARITH_RUN.findall(text)]
    valid = [c.strip(" .") for c in candidates if _is_expression(c.strip(" ."))]
    return max(valid, key=len) if valid else None


def _is_expression(candidate: str) -> bool:
    balanced = candidate.count("(") == candidate.count(")")
    is_date = _DATE.fullmatch(candidate) is not None
    return balanced and not is_date and bool(_OPERATOR_BETWEEN.search(candidate))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def hash_embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector: hashed word and word-pair features, L2-normalised.

    Texts sharing words get similar vectors, so vector search over these behaves
    plausibly in tests; it is not a semantic model.
    """
    vector = [0.0] * dim
    tokens = [w.lower() for w in _WORD.findall(text)] or [text]
    features = [(t, 1.0) for t in tokens] + [
        (f"{a} {b}", 0.5) for a, b in itertools.pairwise(tokens)
    ]
    for feature, weight in features:
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        vector[digest % dim] += weight if (digest >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # every feature cancelled out: still return a unit vector
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]
