"""PHI gate: fast, offline, compiled-regex recognizers for residual PHI in clinical notes.

Why our own recognizers instead of an off-the-shelf de-identifier (measured on the dev machine):

* Presidio's ``AnalyzerEngine`` needs a spaCy model download (fails offline); with the ``no_op``
  NLP engine it only runs regex recognizers, at ~45 notes/s/core - far too slow for a data-prep
  hot path over a million notes.
* philter-lite needs NLTK data (a download, fails offline); scrubadub only finds phone/email/SSN.

This module is the standard library (``re``) only, plus - optionally - the US-census name lists
shipped as data files by the pure-Python PyPI package ``names`` (loaded lazily, once). It scans
~3,000 notes/s per core on ~2 KB notes (gated recognizers, see ``tests/test_phi.py``), never
logs or raises with note text, and returns typed spans (:class:`Finding`) to count, gate, redact.

It is a *gate* for data that is supposed to be de-identified already: it errs towards precision on
clinical language (murmur grades, blood pressures, lab values, eponyms) so that a non-zero count is
meaningful. It is not a certified de-identification system.

Recognizers (see the comments at each pattern for the exact choices):

* PHONE / FAX - US formats; FAX when "fax" occurs in the few characters before the number.
* EMAIL, URL (``http(s)://``, ``www.``), IP (IPv4 with valid octets; full 8-group IPv6).
* SSN - ``ddd-dd-dddd`` with valid area/group/serial; 9 bare digits only after an "SSN" label.
* MRN - a label ("MRN", "MR#", "medical record number", "acct", "account #") + an id of >= 5
  alphanumerics containing a digit; bare digit runs of >= 7 digits (see ``_BARE_ID``).
* DATE - numeric dates *with a year*, ISO dates, month-name dates; never bare years, "3/6",
  "120/80", "1/2", "24/7".
* AGE_OVER_89 - ages 90-149 in age phrasing ("92-year-old", "age 95", "93 yo"); <= 89 is allowed
  by HIPAA safe harbor and never flagged.
* ADDRESS - house number + capitalized street name + street suffix; PO boxes.
* ZIP - 5-digit / ZIP+4 only after a state (abbreviation or name) or a "zip" label.
* NAME - (a) names supplied per note (metadata), matched case-insensitively anywhere; (b) a lexicon
  layer: capitalized tokens in a *name context* (honorific, "Name:" label, "<First> <Last>" pair of
  lexicon names, "<Name> is a 50-year-old"), then every other capitalized occurrence of a token so
  found in the same note. Eponyms ("Bell's palsy", "Parkinson disease") and common words ("Will",
  "May") are guarded. Without the ``names`` package the lexicon is empty and only the honorific /
  label contexts (which need no lexicon) and the metadata names remain.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

_Gate = Callable[[str, str, dict[str, bool]], bool]  # (text, lower text, memo) -> may it match?
_Check = Callable[[str, "re.Match[str]", dict[str, "str | None"]], bool]
_Recognizer = tuple[str, str, "_Gate | None", "_Check | None", "str | None"]

__all__ = ["PHI_TYPES", "Finding", "PhiScanner", "count_by_type", "lexicon_available", "redact"]

PHI_TYPES: tuple[str, ...] = (
    "NAME",
    "PHONE",
    "FAX",
    "EMAIL",
    "SSN",
    "MRN",
    "DATE",
    "AGE_OVER_89",
    "ADDRESS",
    "ZIP",
    "URL",
    "IP",
)

# On equal-length overlaps the type earlier in this list wins (most specific/structured first).
_PRIORITY: tuple[str, ...] = (
    "SSN",
    "EMAIL",
    "URL",
    "IP",
    "FAX",
    "PHONE",
    "MRN",
    "ADDRESS",
    "ZIP",
    "DATE",
    "AGE_OVER_89",
    "NAME",
)

# Largest census last-name rank kept: ranks beyond ~40,000 (covering ~84% of the population) are
# dominated by ordinary and clinical words ("Pain" 46003, "Left" 62464, "Patient" 69268, ...).
_MAX_LAST_RANK = 40_000


@dataclass(frozen=True)
class Finding:
    """A PHI span: ``text[start:end]`` is of ``type`` (in :data:`PHI_TYPES`, or a user type)."""

    type: str
    start: int
    end: int


# --------------------------------------------------------------------------------------------
# Structured recognizers. Each is (type, pattern); if the pattern has a group named "phi" only
# that group is the finding (labels such as "MRN:" stay readable after redaction).
# --------------------------------------------------------------------------------------------

# PHONE: optional +1, area code 2-9xx either in parentheses or followed by a consistent "-" or ".";
# a space separator only after "(555)" or "+1": "555 123 4567" is too close to runs of lab values.
# The exchange digit is not restricted (555-123-4567 is the canonical fake number).
_PHONE = (
    r"(?<![\w.+-])(?=[(+\d])(?P<phi>(?:\+?1[ .-]?)?"
    r"(?:\([2-9]\d{2}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|[2-9]\d{2}-\d{3}-\d{4}"
    r"|[2-9]\d{2}\.\d{3}\.\d{4}"
    r"|(?<=\+1 )[2-9]\d{2} \d{3} \d{4}))"
    r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?![\w-])"
)
# "555 123 4567" (spaces only) counts after a phone cue ("reached at", "callback number",
# "phone:", ...) a few characters before it, where a run of lab values does not occur.
_PHONE_SPACED = (
    r"(?i:\b(?:phone|tel|telephone|cell|mobile|pager|call(?:back)?|contact|reached\s+at|"
    r"number|ph)\b)[^\d\n]{0,25}"
    r"(?<![\w.+-])(?P<phi>[2-9]\d{2} \d{3} \d{4})(?![\w-])"
)
_FAX_CONTEXT = re.compile(r"fax", re.IGNORECASE)
_FAX_WINDOW = 12  # "fax" within this many characters before the number -> FAX

_EMAIL = r"(?<![\w.+-])(?=\w)[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
# URL: scheme or www.; trailing sentence punctuation is not part of the URL.
_URL = r"(?:\bhttps?://|\bwww\.)[^\s<>\"'()\[\]]*[^\s<>\"'()\[\].,;:!?]"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"\b(?<!\.)(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)"
_IPV6 = r"\b(?<!:)(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"  # full form only
# SSN: dashed form validated (no 000/666/9xx area, no 00 group, no 0000 serial); undashed or
# space-separated 9 digits only right after an SSN label.
_SSN = (
    r"\b(?<!-)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"
    r"|(?i:\b(?:SSN|SS#|social\s+security(?:\s+(?:number|no\.?|#))?)\s*[:#]?\s*)"
    r"(?P<phi>\d{3}[ -]?\d{2}[ -]?\d{4})(?!\d)"
)
# MRN (labelled): the id must have >= 5 characters and contain a digit ("MRN: unknown" is not).
_MRN_LABELLED = (
    r"(?i:\b(?:MRN|MR\s?\#|medical\s+record(?:\s+(?:number|no\.?|\#))?|acct\.?"
    r"|account\s*(?:\#|no\.?|number))\s*(?:\#|no\.?|number)?\s*[:#]?\s*)"
    r"(?P<phi>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{4,}\b)"
)
# MRN (bare): >= 7 digits standing alone. Conservative: not part of a decimal/comma number, a
# fraction or a dashed group (phones, dates, SSNs are handled above), and not followed by a unit
# ("1000000 copies/mL", "2500000 units"). Lab values in notes are almost never 7+ plain digits.
_BARE_ID = (
    r"\b(?<![.,/:-])(?!(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d))"
    r"(?P<phi>\d{7,})(?![\w/-]|[.,]\d)"
    r"(?!\s*(?:copies|cells|units?|IU|mg|mcg|g|mL|ml|L|cfu|CFU|/))"
)
# DATE ------------------------------------------------------------------------------------------
_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
    r"|JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|AUG(?:UST)?"
    r"|SEP(?:T(?:EMBER)?)?|OCT(?:OBER)?|NOV(?:EMBER)?|DEC(?:EMBER)?)"
)
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_YEAR4 = r"(?:1[89]\d{2}|20\d{2})"
# Month names are case-sensitive (Capitalized or UPPER) so "may", "march" (verbs) never match; a
# bare month ("in March") or bare year ("in 2019") is not flagged, month + year is.
# Found by running _DATE_WORDS only in a small window around each month name (``_MONTH_WORD``):
# the digit-first alternatives are slow to scan for over a whole note.
_MONTH_WORD = _MONTHS + r"\b"
_DATE_WORDS = (
    rf"\b{_MONTHS}\.?\s+{_DAY}(?:,?\s+{_YEAR4})?(?![\w/:])"  # Jan 2, 2023 / March 3rd
    rf"|\b{_DAY}\s+(?:of\s+)?{_MONTHS}\.?(?:,?\s+{_YEAR4})?\b"  # 2 January 2023 / 3rd of March
    rf"|\b{_MONTHS}\.?,?\s+{_YEAR4}\b"  # January 2023
    rf"|\b{_DAY}[-/ ]{_MONTHS}[-/ ](?:{_YEAR4}|\d{{2}})\b"  # 02-Jan-2023
)
# Numeric dates *must* carry a year: "2/6" (murmur grade), "120/80" (BP), "1/2" (tablet), "24/7"
# are never dates, and a bare d/d is too ambiguous to keep. Month and day ranges are validated in
# code (either m/d or d/m order). "." as separator only with a 4-digit year (versions, decimals).
# ISO yyyy-mm-dd / yyyy/mm/dd and compact yyyymmdd (validated) are dates as well.
_DATE_NUMERIC = (
    r"\b(?<![/.:-])(?P<a>\d{1,2})(?P<sep>[/-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})"
    r"(?![\w/:-]|\.\d)(?!\s*(?:mg|mcg|mL|ml|units|%))"
    r"|\b(?<![/.:-])(?P<a2>\d{1,2})\.(?P<b2>\d{1,2})\.(?P<y2>(?:19|20)\d{2})(?![\w.]|/\d)"
    r"|\b(?<![/.:-])(?P<iy>(?:19|20)\d{2})(?P<isep>[-/])(?P<im>\d{1,2})(?P=isep)(?P<id>\d{1,2})"
    r"(?![\w/:-])"
    # month/year: "03/2021" (month + year is a date element under HIPAA safe harbor)
    r"|\b(?<![/.:-])(?P<my>0?[1-9]|1[0-2])/(?:19|20)\d{2}(?![\w/:-]|\.\d)"
)
_DATE_COMPACT = (
    r"\b(?<![.,/:-])(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?![\w/-]|[.,]\d)"
)
# AGE_OVER_89: 90-149 only, in age phrasing. "for 90 years" (a duration) needs "old"/"yo" to match.
_AGE = (
    r"(?P<phi>9\d|1[0-4]\d)"  # (no leading \b: slow to scan; boundary checked in code)
    r"[ \t]*-?[ \t]*(?:(?:years?|yrs?|y)[ \t]*-?[ \t]*old\b|(?:yo|y/o|y\.o\.?)(?!\w))"
)
_AGE_LABEL = r"\b(?i:age|aged|age\s+of)\s*:?\s*(?P<phi>9\d|1[0-4]\d)(?![\w.]|\.\d)"
_AGE_WORDS = (
    r"(?i:\b(?P<phi>ninety(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?"
    r"|(?:one\s+)?hundred(?:\s+and\s+\w+)?)[- ]years?[- ]old\b)"
)
# ADDRESS: house number, 1-4 capitalized (or ordinal) street-name words, a street suffix, and an
# optional unit. Requiring a capitalized street name keeps "5 Dr." / "2 Way" out.
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq)"
)
_ADDRESS = (
    r"\b(?<![.,/-])\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?"
    r"(?:(?:[A-Z][A-Za-z'-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"{_STREET_SUFFIX}\b"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|\#)\.?\s*\#?\s*[A-Za-z0-9-]+)?"
    r"|\bP\.?\s?O\.?\s+Box\s+\d+\b"
)
# ZIP: bare 5-digit numbers are everywhere in labs/counts, so only after a state or a zip label.
_STATE_ABBR = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|"
    "NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|"
    "Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|"
    "Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|"
    "New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|"
    "Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|"
    "West Virginia|Wisconsin|Wyoming|Puerto Rico"
)
_ZIP = (
    rf"(?:\b(?:{_STATE_ABBR}|{_STATE_NAMES})\.?,?\s+|(?i:\bzip(?:\s*code)?\s*[:#]?\s*))"
    r"(?P<phi>\d{5}(?:-\d{4})?)(?![\w-])"
)
# A city (a geographic subdivision smaller than a state: Safe Harbor PHI) is recognizable in an
# address line: "Springfield, IL 62704". Reported as ADDRESS.
_CITY = (
    r"(?<![\w-])(?P<phi>[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2}),?\s+"
    rf"(?:{_STATE_ABBR}|{_STATE_NAMES})\.?,?\s+\d{{5}}(?:-\d{{4}})?(?![\w-])"
)


def _has(*needles: str) -> _Gate:
    """Gate: any of the literal ``needles`` occurs (case-sensitive; see ``_label`` otherwise)."""
    return lambda text, low, memo: any(n in text for n in needles)


def _finds(*patterns: str) -> _Gate:
    """Gate: each of the cheap regexes has a match (results memoized per note: gates share)."""
    rxs = [(p, re.compile(p)) for p in patterns]

    def gate(text: str, low: str, memo: dict[str, bool]) -> bool:
        for p, rx in rxs:
            hit = memo.get(p)
            if hit is None:
                hit = memo[p] = rx.search(text) is not None
            if not hit:
                return False
        return True

    return gate


def _label(pattern: str) -> _Gate:
    """Gate for a case-insensitive label (``pattern`` in lower case): searched in the lower-cased
    text, where a literal start makes ``re`` fast. ``str.lower()`` and ``re.IGNORECASE`` agree on
    ASCII only (``re`` also folds "ı", "İ", "ſ", "K" onto i, s, k), so other text is searched
    with ``re.IGNORECASE``, as the recognizers' ``(?i:...)`` patterns match it."""
    rx, rx_i = re.compile(pattern), re.compile(pattern, re.IGNORECASE)

    def gate(text: str, low: str, memo: dict[str, bool]) -> bool:
        if text.isascii():
            return rx.search(low) is not None
        return rx_i.search(text) is not None

    return gate


def _either(*gates: _Gate) -> _Gate:
    return lambda text, low, memo: any(g(text, low, memo) for g in gates)


def _word_boundary_before(text: str, m: re.Match[str], gd: dict[str, str | None]) -> bool:
    i = m.start()
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "._")


def _date_check(text: str, m: re.Match[str], gd: dict[str, str | None]) -> bool:
    return _valid_numeric_date(gd)


# Each recognizer runs only if its gate - substring tests or cheap regexes that every match must
# contain - passes. Most notes have no phone, e-mail, SSN, ... so most full patterns never run;
# this is what keeps the scanner at thousands of notes/s (a full pattern costs ~20-200 us/note).
# Gate regexes begin with a plain character class (``\d\d\d``, not ``\d{3}``; no ``\b`` or
# lookbehind first): ``re`` then skips to candidate characters in C instead of trying a match at
# every position, ~5-10x faster on a 2 KB note. Each gate is a *necessary* condition of its
# pattern (a substring of every match), so gating never changes the findings.
_D5 = r"\d\d\d\d\d"
_GROUPS = r"\d\d\d[-.) ]+\d{2,3}[-. ]\d{4}"  # phone- or SSN-shaped digit groups
# Every numeric-date alternative has a second separator followed by a digit, or "/19xx"-"/20xx".
_DATE_NUMERIC_GATE = r"[/.-](?:\d\d?[/.-]\d|(?:19|20)\d\d)"
# Every house-number address has a street suffix word (PO boxes say "Box").
_ADDRESS_GATE = rf"{_STREET_SUFFIX}\b"
# The dashed SSN form.
_SSN_GATE = r"\d\d\d-\d\d-\d\d\d\d"
# ZIP after a state, and the city before it: "<state>[.][,] <5 digits>" occurs in the text.
_STATE_ZIP_GATE = rf"(?:{_STATE_ABBR}|{_STATE_NAMES})\.?,?\s+\d\d\d\d\d"
# Age labels, on the lower-cased text: "age[d| of][:] 9x / 1[0-4]x".
_AGE_LABEL_GATE = r"age(?:d|\s+of)?\s*:?\s*(?:9|1[0-4])\d"


_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")


def _ipv6_gate(text: str, low: str, memo: dict[str, bool]) -> bool:
    # The full form has 7 colons in a row of hex groups; clock times ("17:45") make a bare count
    # of colons pass in nearly every note.
    return text.count(":") >= 7 and _IPV6_GATE.search(text) is not None


_BUILTIN_PATTERNS: tuple[_Recognizer, ...] = (
    # (type, pattern, gate, post-check or None, anchor pattern or None)
    ("PHONE", _PHONE, _finds(_GROUPS), None, None),  # FAX decided from context
    ("PHONE", _PHONE_SPACED, _finds(_GROUPS, r"\d\d\d \d{3} \d{4}"), None, None),
    ("EMAIL", _EMAIL, _has("@"), None, None),
    ("URL", _URL, _has("://", "www."), None, None),
    ("IP", _IPV4, _finds(r"\d\.\d{1,3}\.\d{1,3}\.\d"), None, None),
    ("IP", _IPV6, _ipv6_gate, None, None),
    (
        "SSN",
        _SSN,
        _either(_finds(_GROUPS, _SSN_GATE), _label(r"ssn|ss#|social\s+security")),
        None,
        None,
    ),
    (
        "MRN",
        _MRN_LABELLED,
        _label(r"mrn|mr\s?#|medical\s+record|acct|account"),
        None,
        None,
    ),
    ("MRN", _BARE_ID, _finds(_D5, r"\d\d\d\d\d\d\d"), None, None),
    ("DATE", _DATE_WORDS, None, None, _MONTH_WORD),
    ("DATE", _DATE_NUMERIC, _finds(_DATE_NUMERIC_GATE), _date_check, None),
    ("DATE", _DATE_COMPACT, _finds(_D5, r"\d\d\d\d\d\d\d\d"), None, None),
    ("AGE_OVER_89", _AGE, _has("9", "1"), _word_boundary_before, None),
    (
        "AGE_OVER_89",
        _AGE_LABEL,
        _label(_AGE_LABEL_GATE),
        None,
        None,
    ),
    ("AGE_OVER_89", _AGE_WORDS, _label("ninety|hundred"), None, None),
    (
        "ADDRESS",
        _ADDRESS,
        _either(_finds(r"\d[A-Za-z]?[ \t]+[A-Z]", _ADDRESS_GATE), _has("Box")),
        None,
        None,
    ),
    ("ZIP", _ZIP, _either(_finds(_D5, _STATE_ZIP_GATE), _label("zip")), None, None),
    ("ADDRESS", _CITY, _finds(_D5, _STATE_ZIP_GATE), None, None),
)
_ANCHOR_WINDOW = 20  # characters searched on each side of an anchor match

# --------------------------------------------------------------------------------------------
# Name layer
# --------------------------------------------------------------------------------------------

# A capitalized name token: "Collins", "O'Brien", "McDonald", "Mary-Jane". ALL-CAPS words are
# never lexicon candidates (they are mostly headers / acronyms).
_TOK = r"[A-Z](?:'[A-Z])?[a-z]+(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?"
# Honorific context: the next capitalized word is a name, lexicon or not ("Dr. Lastname" is a
# clinician - PHI-adjacent, flagged as NAME). A second capitalized word is a name if in the
# last-name lexicon ("Mr. John Perry").
# (Patterns start with literals, not ``\b``/lookbehinds, so ``re`` can skip ahead quickly; the
# word boundary before the match is checked in code.)
_HONORIFIC = re.compile(
    rf"(?:Mrs|Mr|Ms|Mx|Miss|Dr)\.?[ \t]+(?P<n1>{_TOK})\b(?![.'’]?[ \t]*-)"
    rf"(?:[ \t]+(?:[A-Z]\.[ \t]+)?(?P<n2>{_TOK})\b)?"
)
# Weaker titles: the next word is a name only if it is in the lexicon.
_TITLE = re.compile(rf"(?:Doctor|Professor|Prof|Nurse|NP|PA)\.?[ \t]+(?P<n1>{_TOK})\b")
# "Patient name: John Smith", "Name: Smith, John".
_LABEL = re.compile(
    rf"(?i:\b(?:patient(?:'s)?\s+name|pt\.?\s+name|name|patient))\s*:[ \t]*"
    rf"(?P<n1>{_TOK})(?:,?[ \t]+(?P<n2>{_TOK}))?(?:[ \t]+(?P<n3>{_TOK}))?\b"
)
# Every _LABEL match has "name:" or "patient:" (a colon after optional whitespace) in its lower-
# cased text; a lot cheaper to look for than to run _LABEL (which starts with ``\b``).
_LABEL_GATE = _label(r"(?:name|patient)\s*:")
# "<First> <Last>" (optionally "<First> A. <Last>") - overlapping pairs via a lookahead. The
# word boundary before <First> is checked in code (``_at_word_starts``): a pattern that starts
# with a character class is scanned ~3x faster than one that starts with ``\b``.
_PAIR = re.compile(rf"(?P<n1>{_TOK})(?=[ \t]+(?:[A-Z]\.[ \t]+)?(?P<n2>{_TOK})\b)")
# "<Name> [<Name>]['s] is a [pleasant] 50-year-old / 75 y.o. / 22-month-old": find the
# "is a ... 50-year-old" part (literal start: fast), then the name(s) just before it.
_IS_AGED = re.compile(
    r"(?:is|was)[ \t]+an?[ \t]+(?:[a-z]+[ \t]+){0,3}\d{1,3}[ \t]*-?[ \t]*"
    r"(?:(?:year|yr|month|week|day)s?\b|y\.?o\.?|y/o|yo\b)"
)
_SUBJECT = re.compile(rf"(?<![\w'-])(?P<n1>{_TOK})(?:[ \t]+(?P<n2>{_TOK}))?(?:'s)?[ \t]+\Z")
_SUBJECT_WINDOW = 60
# A token directly followed by an eponym head noun is a disease/sign/test, not a person:
# "Bell's palsy", "Parkinson disease", "Stevens-Johnson syndrome", "Murphy's sign".
_EPONYM_NEXT = re.compile(
    r"(?:['’]s?)?(?:-[A-Z][a-z]+)*[ \t]+(?:disease|syndrome|palsy|sign|test|maneuver|manoeuvre"
    r"|fracture|cyst|esophagus|phenomenon|lymphoma|sarcoma|tumou?r|neuroma|contracture|nodes?"
    r"|ulcer|triad|reflex|criteria|score|scale|classification|procedure|operation|repair"
    r"|disorder|dementia|law|line|ligament|tube|catheter|monitor|position|space|canal|duct"
    r"|gland|cells?|bod(?:y|ies)|solution|stain|ring|murmur|node|arthroplasty|technique"
    r"|stocking|thyroiditis|encephalopathy|shield|block|lesion|deformity|angle|index|rule)\b",
    re.IGNORECASE,
)
# Tokens never taken as names by the lexicon layer unless supplied as metadata names (honorific
# context excepted - "Dr. Bell" is a person - but they are never propagated through the note).
_STOP_WORDS = """
Will May Mark Grant Bill Hope Faith Joy Grace Chase Rich Young Long Short Little Hand Wade Pat Sue
Don Art Gene Guy Jack Max Ray Rod Rose Iris Ivy Dawn April June August Summer Autumn Winter Spring
Major Minor General Care Nurse Doctor Patient Given Head Back Foot Knee Heart Blood Good Lung
Street Lane Court Sept Jan Sunny Dusty Rusty Misty Stormy Crystal Amber Ruby Pearl Jade Holly
Daisy Lily Heather Olive Sage Skye Star Angel Precious Baby Infant Mother Father Son Daughter
Brother Sister Wife Husband Child Man Woman Boy Girl Lady Gentleman Female Male He She It They
This That The There Here His Her Their Our Your My We Today Monday Tuesday Wednesday Thursday
Friday Saturday Sunday Plan History Exam Assessment Parkinson Crohn Addison Cushing Graves Hodgkin
Alzheimer Bell Down Paget Raynaud Tourette Lyme Foley Holter Doppler Glasgow Apgar Gram Pap Epley
Heimlich Whipple Nissen Osler Marfan Asperger Munchausen Behcet Kawasaki Wilms Burkitt Kaposi
Charcot Wernicke Korsakoff Huntington Guillain Barre Hashimoto Sjogren Meniere Bartholin Colles
Achilles Homan Homans Babinski Romberg Lachman Tinel Phalen Finkelstein Spurling Kernig
Brudzinski Chvostek Trousseau Kussmaul Virchow Trendelenburg McMurray Apley Lasegue Dupuytren
Heberden Bouchard Lisfranc Osgood Schlatter Perthes Scheuermann Coumadin Tylenol Advil Motrin
Aleve Lasix Norco Medicare Medicaid Epstein Barr Creutzfeldt Jakob Ehlers Danlos Klinefelter
Prader Willi Goodpasture Waldenstrom Boerhaave Schatzki Zenker Meckel Hirschsprung Kegel
Valsalva Mayo Cleveland Hopkins Kaiser Sinai Mercy Providence Methodist Baptist Presbyterian
Lutheran Jesus God Lord Christmas Easter Thanksgiving America American English Spanish Dax
No Yes Yeah Yep Nope Oh Ah Uh Um Uhm Hm Hmm Mm Huh Well Okay Okey Alright Right Sure Fine Cool
Nice Great Wow Sorry Please Thanks Thank Hi Hey Hello Bye Goodbye So And But Or Not Do Does Did
Just Pretty Go In On At Then Now Also Both Maybe Actually What Why How When Where Who Let Got
"""
# Surnames that are also eponyms (Smith/Jones/Bennett fracture, Turner syndrome, Baker's cyst,
# Barrett's esophagus) are NOT stop words - they are common patient names; ``_EPONYM_NEXT``
# guards them when followed by a head noun.
_STOP = frozenset(_STOP_WORDS.split())


@functools.lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names), upper-case, from the ``names`` package data; empty if absent."""
    try:
        from importlib.resources import files

        pkg = files("names")
        first: set[str] = set()
        for fname in ("dist.male.first", "dist.female.first"):
            first.update(
                line.split(None, 1)[0]
                for line in pkg.joinpath(fname).read_text(encoding="utf-8").splitlines()
                if line.strip()
            )
        last = {
            line.split(None, 1)[0]
            for line in pkg.joinpath("dist.all.last")
            .read_text(encoding="utf-8")
            .splitlines()[:_MAX_LAST_RANK]
            if line.strip()
        }
    except (ImportError, OSError, ValueError):  # package or its data files missing
        return frozenset(), frozenset()
    return frozenset(first), frozenset(last)


def lexicon_available() -> bool:
    """Whether the census name lexicon (PyPI package ``names``) could be loaded."""
    first, last = _lexicon()
    return bool(first and last)


@functools.lru_cache(maxsize=4096)
def _name_words(names: tuple[str, ...]) -> frozenset[str]:
    """Lower-cased words of the names, stripped of ".,": every match of ``_names_regex`` or
    ``_name_tokens_regex`` contains one of them."""
    return frozenset(w.strip(".,").lower() for n in names for w in n.split())


@functools.lru_cache(maxsize=4096)
def _names_regex(names: tuple[str, ...]) -> re.Pattern[str] | None:
    variants: set[str] = set()
    for n in names:
        words = n.split()
        if len(n.strip()) < 2:
            continue
        variants.add(r"\s+".join(re.escape(w) for w in words))
        if len(words) >= 2:  # "Smith, John": the last-name-first order of lists and labels
            variants.add(re.escape(words[-1]) + r",\s*" + r"\s+".join(map(re.escape, words[:-1])))
    parts = sorted(variants, key=len, reverse=True)
    if not parts:
        return None
    return re.compile(rf"(?<![^\W\d_])(?:{'|'.join(parts)})(?![^\W\d_])", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _name_tokens_regex(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """The single words of multi-word metadata names ("John", "Smith" of "John Smith"): a
    note says "Smith reports ..." as often as the full name. Case-sensitive (Title or UPPER
    case), so the patient "Will Rose" does not redact "will" or "rose"; stop words are skipped."""
    toks: set[str] = set()
    for n in names:
        words = n.split()
        if len(words) < 2:
            continue
        for w in words:
            w = w.strip(".,")
            if len(w) >= 2 and w[:1].upper() + w[1:].lower() not in _STOP:
                toks |= {re.escape(w[:1].upper() + w[1:].lower()), re.escape(w.upper())}
    if not toks:
        return None
    alts = "|".join(sorted(toks, key=len, reverse=True))
    return re.compile(rf"(?<![^\W\d_])(?:{alts})(?![^\W\d_])")


def _merge(findings: list[Finding]) -> list[Finding]:
    """Merge overlapping findings: each cluster of overlapping spans becomes one finding covering
    their union (so no PHI character escapes redaction), typed as its longest member; on equal
    length, the type earlier in ``_PRIORITY`` (then alphabetical, for user types) wins."""
    if not findings:
        return []
    rank = {t: i for i, t in enumerate(_PRIORITY)}

    def better(a: Finding, b: Finding) -> bool:
        la, lb = a.end - a.start, b.end - b.start
        if la != lb:
            return la > lb
        ka = (rank.get(a.type, len(rank)), a.type)
        kb = (rank.get(b.type, len(rank)), b.type)
        return ka < kb

    ordered = sorted(findings, key=lambda f: (f.start, -f.end))
    out: list[Finding] = []
    cur_start, cur_end, best = ordered[0].start, ordered[0].end, ordered[0]
    for f in ordered[1:]:
        if f.start < cur_end:  # overlap (touching spans stay separate)
            cur_end = max(cur_end, f.end)
            if better(f, best):
                best = f
        else:
            out.append(Finding(best.type, cur_start, cur_end))
            cur_start, cur_end, best = f.start, f.end, f
    out.append(Finding(best.type, cur_start, cur_end))
    return out


class PhiScanner:
    """Scan text for PHI. Construct once (patterns compile here), then call :meth:`scan` per note.

    Args:
        lexicon: use the census name lexicon for the context-based NAME layer (if installed).
        extra_patterns: ``TYPE -> regex`` additions (``TYPE`` upper-case, may be new). A group
            named ``phi`` restricts the finding to that group. An invalid regex raises
            ``ValueError`` naming the TYPE.
        types: restrict findings to these types (default: all built-in plus extra types).
    """

    def __init__(
        self,
        *,
        lexicon: bool = True,
        extra_patterns: Mapping[str, str] | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        extra = dict(extra_patterns or {})
        for t in extra:
            if not isinstance(t, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]*", t):
                raise ValueError(f"extra_patterns: type {t!r} must be an upper-case identifier")
        known = set(PHI_TYPES) | set(extra)
        if types is None:
            self.types: frozenset[str] = frozenset(known)
        else:
            unknown = sorted(set(types) - known)
            if unknown:
                raise ValueError(f"unknown PHI types: {unknown}")
            self.types = frozenset(types)

        # (type, pattern, gate, post-check, anchor): see _BUILTIN_PATTERNS
        self._patterns: list[
            tuple[str, re.Pattern[str], _Gate | None, _Check | None, re.Pattern[str] | None]
        ] = []
        for t, pat, gate, check, anchor in _BUILTIN_PATTERNS:
            wanted = {t, "FAX"} if t == "PHONE" else {t}
            if wanted & self.types:
                anchor_rx = re.compile(anchor) if anchor else None
                self._patterns.append((t, re.compile(pat), gate, check, anchor_rx))
        for t, pat in extra.items():
            if t not in self.types:
                continue
            try:
                self._patterns.append((t, re.compile(pat), None, None, None))
            except (re.error, TypeError) as e:
                raise ValueError(f"extra_patterns[{t!r}]: invalid regex: {e}") from None

        self._first: frozenset[str] = frozenset()
        self._last: frozenset[str] = frozenset()
        if lexicon and "NAME" in self.types:
            self._first, self._last = _lexicon()
        self._any_name = self._first | self._last

    # ---------------------------------------------------------------------------------------
    def scan(self, text: str, names: Iterable[str] = ()) -> list[Finding]:
        """Findings in ``text``, sorted by start, overlaps merged (see ``_merge``).

        ``names``: known names for this note (e.g. patient first/family name from metadata),
        matched case-insensitively as whole words anywhere in the text.
        """
        found: list[Finding] = []
        low = text.lower()
        memo: dict[str, bool] = {}
        for t, rx, gate, check, anchor in self._patterns:
            if gate is not None and not gate(text, low, memo):
                continue
            if anchor is None:
                matches: Iterable[re.Match[str]] = rx.finditer(text)
            else:
                matches = _anchored(rx, anchor, text)
            for m in matches:
                gd = m.groupdict()
                if check is not None and not check(text, m, gd):
                    continue
                span = _phi_span(m, gd)
                if span[0] == span[1]:
                    continue
                typ = t
                if t == "PHONE":
                    pre = text[max(0, span[0] - _FAX_WINDOW) : span[0]]
                    typ = "FAX" if _FAX_CONTEXT.search(pre) else "PHONE"
                    if typ not in self.types:
                        continue
                found.append(Finding(typ, span[0], span[1]))
        if "NAME" in self.types:
            self._scan_names(text, low, tuple(n.strip() for n in names if n and n.strip()), found)
        return _merge(found)

    # ---------------------------------------------------------------------------------------
    def _scan_names(self, text: str, low: str, names: tuple[str, ...], out: list[Finding]) -> None:
        # Both name regexes need one of the names' words in the text: a substring test first
        # (most notes do not mention the patient by name; the regexes cost ~0.1 ms a note).
        if names and any(w in low for w in _name_words(names)):
            for rx in (_names_regex(names), _name_tokens_regex(names)):
                if rx is not None:
                    out.extend(Finding("NAME", m.start(), m.end()) for m in rx.finditer(text))

        first, last, anyn = self._first, self._last, self._any_name
        seeds: set[str] = set()  # tokens found in context, to propagate through the note

        def eponym(end: int) -> bool:
            return _EPONYM_NEXT.match(text, end) is not None

        def add(m: re.Match[str], g: str, *, propagate: bool = True) -> None:
            tok = m.group(g)
            if eponym(m.end(g)):
                return
            out.append(Finding("NAME", m.start(g), m.end(g)))
            if propagate and tok not in _STOP:
                seeds.add(tok)

        vocab: set[str] | None = None

        def word_in(word: str) -> bool:
            # Long notes (50 KB+) have thousands of candidate names: one set of the note's
            # words instead of one scan of the note per candidate (quadratic; 70 s on 5 MB).
            nonlocal vocab
            if len(text) < 20_000 or not (word.isascii() and word.isalnum()):
                return _word_in(word, text)
            if vocab is None:
                vocab = set(_ALNUM_RUN.findall(text))  # maximal runs of str.isalnum chars
            return word in vocab

        def common_word(tok: str) -> bool:
            # in the stoplist, or used as an ordinary lower-case word elsewhere in this note
            return tok in _STOP or word_in(tok.lower())

        for m in _HONORIFIC.finditer(text):
            if not _word_start(text, m.start()):
                continue
            add(m, "n1", propagate=not word_in(m.group("n1").lower()))
            n2 = m.group("n2")
            if n2 and n2.upper() in last and not common_word(n2):
                add(m, "n2")
        if _LABEL_GATE(text, low, {}):
            for m in _LABEL.finditer(text):
                # A bare "Patient:" is also a speaker tag in transcripts ("Patient: No, I ...");
                # after it, only lexicon names that are not ordinary words count. "Name:" and
                # "Patient name:" labels take any capitalized token.
                speaker_tag = "name" not in m.group(0)[: m.start("n1") - m.start()].lower()
                for g in ("n1", "n2", "n3"):
                    tok = m.group(g)
                    if not tok or tok in _STOP:
                        continue
                    if speaker_tag and (
                        (tok.upper() not in first and tok.upper() not in last) or common_word(tok)
                    ):
                        continue
                    add(m, g)
        if anyn:
            for m in _TITLE.finditer(text):
                tok = m.group("n1")
                if _word_start(text, m.start()) and tok.upper() in last and not common_word(tok):
                    add(m, "n1")
            for m in _at_word_starts(_PAIR, text):
                t1, t2 = m.group("n1"), m.group("n2")
                if (
                    t1.upper() in first
                    and t2.upper() in last
                    and not common_word(t1)
                    and not common_word(t2)
                    and not eponym(m.end("n2"))
                ):
                    add(m, "n1")
                    out.append(Finding("NAME", m.start("n2"), m.start("n2") + len(t2)))
                    seeds.add(t2)
            for a in _IS_AGED.finditer(text):
                if not _word_start(text, a.start()):
                    continue
                m = _SUBJECT.search(text, max(0, a.start() - _SUBJECT_WINDOW), a.start())
                if m is None:
                    continue
                for g in ("n1", "n2"):
                    tok = m.group(g)
                    if tok and tok.upper() in anyn and not common_word(tok):
                        add(m, g)
        if seeds:
            rx = _seed_regex(frozenset(seeds))
            for m in rx.finditer(text):
                if not eponym(m.end()):
                    out.append(Finding("NAME", m.start(), m.end()))


def _anchored(rx: re.Pattern[str], anchor: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Matches of ``rx`` within a small window around each match of ``anchor``."""
    windows: list[list[int]] = []
    for a in anchor.finditer(text):
        lo, hi = max(0, a.start() - _ANCHOR_WINDOW), a.end() + _ANCHOR_WINDOW
        if windows and lo <= windows[-1][1]:  # overlapping windows are merged, never cut
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    out: list[re.Match[str]] = []
    for lo, hi in windows:
        out.extend(rx.finditer(text, lo, min(hi, len(text))))
    return out


def _at_word_starts(rx: re.Pattern[str], text: str) -> Iterable[re.Match[str]]:
    """``finditer`` of ``\\b`` + ``rx`` when every match of ``rx`` starts with a word character:
    the same matches, found faster (see ``_PAIR``). A match that does not start a word is not
    kept and the search resumes one character later, as ``finditer`` would have."""
    pos, n = 0, len(text)
    while pos <= n:
        m = rx.search(text, pos)
        if m is None:
            return
        i = m.start()
        if i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"):
            yield m
            pos = m.end() if m.end() > i else i + 1
        else:
            pos = i + 1


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not text[i - 1].isalnum()


_ALNUM_RUN = re.compile(r"[^\W_]+")  # Python's \w is isalnum() or "_"


def _word_in(word: str, text: str) -> bool:
    """``word`` occurs in ``text`` as a whole word, exactly (str.find: much faster than a regex)."""
    n = len(word)
    i = text.find(word)
    while i >= 0:
        if (i == 0 or not text[i - 1].isalnum()) and (
            i + n == len(text) or not text[i + n].isalnum()
        ):
            return True
        i = text.find(word, i + 1)
    return False


@functools.lru_cache(maxsize=4096)
def _seed_regex(seeds: frozenset[str]) -> re.Pattern[str]:
    alts = "|".join(sorted((re.escape(s) for s in seeds), key=len, reverse=True))
    return re.compile(rf"\b(?:{alts})\b")


def _phi_span(m: re.Match[str], gd: dict[str, str | None]) -> tuple[int, int]:
    for g in ("phi", "phi1", "phi2"):
        if gd.get(g) is not None:
            return m.span(g)
    return m.span()


def _valid_numeric_date(gd: dict[str, str | None]) -> bool:
    """Month/day range check for the numeric DATE alternatives (m/d or d/m order accepted)."""

    def md_ok(a: int, b: int) -> bool:
        return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)

    if gd.get("a") is not None:
        return md_ok(int(gd["a"] or 0), int(gd["b"] or 0))
    if gd.get("a2") is not None:
        return md_ok(int(gd["a2"] or 0), int(gd["b2"] or 0))
    if gd.get("iy") is not None:
        return 1 <= int(gd["im"] or 0) <= 12 and 1 <= int(gd["id"] or 0) <= 31
    return True  # compact yyyymmdd: validated by the pattern


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding's span by ``[TYPE]``. Findings may be unsorted or overlapping (they
    are merged first, as :meth:`PhiScanner.scan` does)."""
    parts: list[str] = []
    pos = 0
    for f in _merge(list(findings)):
        parts.append(text[pos : f.start])
        parts.append(f"[{f.type}]")
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def count_by_type(findings: Iterable[Finding]) -> dict[str, int]:
    """``{type: count}`` for the findings (only types that occur)."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.type] = counts.get(f.type, 0) + 1
    return counts
