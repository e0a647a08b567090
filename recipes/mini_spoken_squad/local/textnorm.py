"""English text normalisation for espeak-ng synthesis and ASR targets.

Design decision (see ../README or ATTRIBUTION notes): the ASR target must be what the
synthesiser actually says.  espeak-ng reads digits, symbols, abbreviations and Roman
numerals with its own rules ("1842" -> "one thousand eight hundred forty two",
"II" -> "roman two", "etc" -> "etcetera"), so keeping the written form in the target
would make one target token stand for several spoken words.  Instead we rewrite the
text ourselves into plain words *before* synthesis and feed exactly those words to
espeak-ng.  The target is the same word sequence, lower-cased, without punctuation:

    normalize("In 1842, the U.S. had 8,000 students (25%).")
    -> tts    = "In eighteen forty two, the U S had eight thousand students, twenty five percent."
       target = "in eighteen forty two the u s had eight thousand students twenty five percent"

Targets therefore contain only ``[a-z']`` words (no digits), which BERT's uncased
WordPiece vocabulary covers.  Non-Latin script (CJK, Greek, IPA, ...) is dropped because
an English voice cannot say it and the uncased vocabulary would not hold it.
``espeak_expansions`` audits the result: it lists target words that espeak-ng still
expands into several words (a residual target/audio mismatch).
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from dataclasses import dataclass

# espeak-ng speed, measured on SQuAD text over several voices: seconds ~= characters /
# (ESPEAK_CHARS_PER_WORD * rate_wpm / 60); mean 6.1, std 0.46.
ESPEAK_CHARS_PER_WORD = 6.1

__all__ = [
    "ESPEAK_CHARS_PER_WORD",
    "Normalized",
    "cardinal",
    "ordinal",
    "year_words",
    "clean_unicode",
    "split_sentences",
    "normalize",
    "to_target",
    "chunk_words",
    "espeak_expansions",
]

# --------------------------------------------------------------------------- numbers
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_DIGIT = dict(zip("0123456789", _ONES[:10]))


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    elif n or not words:
        words.append(_ONES[n])
    return words


def cardinal(n: int) -> str:
    """American English cardinal without "and": 1842 -> 'one thousand eight hundred forty two'."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= 1000 ** len(_SCALES):
        return " ".join(_DIGIT[d] for d in str(n))
    if n == 0:
        return "zero"
    groups: list[str] = []
    scale = 0
    while n:
        n, rest = divmod(n, 1000)
        if rest:
            part = _under_thousand(rest)
            if _SCALES[scale]:
                part.append(_SCALES[scale])
            groups = part + groups
        scale += 1
    return " ".join(groups)


_ORD_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}


def _ordinalize_word(w: str) -> str:
    if w in _ORD_IRREGULAR:
        return _ORD_IRREGULAR[w]
    if w.endswith("y"):
        return w[:-1] + "ieth"
    return w + "th"


def ordinal(n: int) -> str:
    """21 -> 'twenty first'."""
    words = cardinal(n).split()
    words[-1] = _ordinalize_word(words[-1])
    return " ".join(words)


def year_words(n: int) -> str:
    """Year reading for 1000..2099: 1842 -> 'eighteen forty two', 1905 -> 'nineteen oh five',
    1900 -> 'nineteen hundred', 2008 -> 'two thousand eight', 2015 -> 'twenty fifteen'."""
    if not 1000 <= n <= 2099 or (2000 <= n <= 2009) or n % 1000 == 0 or 1000 < n < 1010:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return cardinal(hi) + " hundred"
    if lo < 10:
        return cardinal(hi) + " oh " + _ONES[lo]
    return cardinal(hi) + " " + cardinal(lo)


def _plural_last(words: str) -> str:
    parts = words.split()
    w = parts[-1]
    parts[-1] = w[:-1] + "ies" if w.endswith("y") else w + "s"
    return " ".join(parts)


def _digits(s: str) -> str:
    return " ".join(_DIGIT[d] for d in s)


def _int_words(s: str, allow_year: bool = True) -> str:
    """Read an integer string (commas allowed)."""
    grouped = "," in s
    s = s.replace(",", "")
    if len(s) > 1 and s.startswith("0"):
        return _digits(s)
    if len(s) > 15:
        return _digits(s)
    n = int(s)
    if allow_year and not grouped and len(s) == 4 and 1100 <= n <= 2099:
        return year_words(n)
    return cardinal(n)


def _number_words(s: str, allow_year: bool = True) -> str:
    """Read '8,000', '12.5', '.5', '1842'."""
    if "." in s:
        whole, frac = s.split(".", 1)
        head = _int_words(whole, allow_year=False) if whole else ""
        return (head + " point " + _digits(frac)).strip()
    return _int_words(s, allow_year=allow_year)


# --------------------------------------------------------------------------- unicode
_CHAR_MAP = {
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2033": '"',
    "\u300a": '"', "\u300b": '"',
    "\u2013": "\u2013", "\u2014": "\u2014", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u00a0": " ", "\u3000": " ", "\u2009": " ", "\u202f": " ", "\t": " ", "\n": " ", "\r": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u200e": "", "\u200f": "", "\ufeff": "",
    "\u2026": "...", "\u2022": ",", "\u00b7": " ", "\u2044": "/",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "Ae", "\u0153": "oe", "\u0152": "Oe",
    "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D",
    "\u00f0": "d", "\u00d0": "D", "\u00fe": "th", "\u00de": "Th", "\u0131": "i",
}
_FRACTIONS = {"\u00bd": "one half", "\u2153": "one third", "\u2154": "two thirds",
              "\u00bc": "one quarter", "\u00be": "three quarters"}


def clean_unicode(text: str) -> str:
    """Map typographic characters to ASCII stand-ins; keep everything else as is."""
    text = unicodedata.normalize("NFC", text)
    return "".join(_CHAR_MAP.get(ch, ch) for ch in text)


def _ascii_fold(text: str) -> str:
    """Strip accents from Latin letters and drop every other non-ASCII character."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if ord(ch) < 128:
            out.append(ch)
        elif unicodedata.combining(ch):
            continue
        else:
            out.append(" ")
    return "".join(out)


# --------------------------------------------------------------------------- sentences
# Words that end with a period but do not end a sentence.
_NO_BREAK = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "lt", "col", "capt", "sgt",
    "gov", "sen", "rep", "rev", "fr", "mt", "ft", "vs", "v", "no", "nos", "op", "vol",
    "approx", "ca", "c", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "fig", "pp", "ed", "est", "cf", "al",
}
_SENT_END = re.compile(r"[.!?]+[\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split that knows common abbreviations, initials and acronyms."""
    text = re.sub(r"\s+", " ", clean_unicode(text)).strip()
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        end = m.end()
        if text[m.start()] == ".":
            before = text[start:m.start()].split()
            word = before[-1] if before else ""
            bare = word.strip("\"'([").lower()
            if bare in _NO_BREAK:
                continue
            # initials ("J.") and dotted acronyms ("U.S.", "e.g.")
            if re.fullmatch(r"(?:[a-z]\.)*[a-z]", bare):
                continue
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


# --------------------------------------------------------------------------- normaliser
_EDITORIAL = re.compile(
    r"\[(?:citation needed|page needed|update|\.\.\.|not in citation given|verification needed|"
    r"clarification needed|original research\??|dubious[^\]]*|when\?|who\?|by whom\?|which\?|"
    r"where\?|why\?|according to whom\?|unreliable source\??|failed verification|"
    r"(?:note|web|n|nb|lower-alpha|citation)\s*\d+|\d+|[a-zA-Z]|[^\]]*needed)\]",
    re.IGNORECASE,
)

_ABBREV: list[tuple[str, str]] = [
    (r"\be\.g\.", "for example"), (r"\bi\.e\.", "that is"), (r"\betc\.", "et cetera"),
    (r"\betc\b", "et cetera"), (r"\bvs\.?(?=\s)", "versus"),
    (r"(?<=[A-Za-z] )v\.?(?= [A-Z])", "versus"), (r"\bMrs\.?(?=\s)", "Missus"),
    (r"\bMr\.?(?=\s)", "Mister"), (r"\bMs\.(?=\s)", "Miz"), (r"\bDr\.(?=\s)", "Doctor"),
    (r"\bProf\.(?=\s)", "Professor"), (r"\bJr\.?(?=[\s,.]|$)", "Junior"),
    (r"\bSr\.?(?=[\s,.]|$)", "Senior"), (r"\bGen\.(?=\s)", "General"),
    (r"\bLt\.(?=\s)", "Lieutenant"), (r"\bCol\.(?=\s)", "Colonel"),
    (r"\bCapt\.(?=\s)", "Captain"), (r"\bSgt\.(?=\s)", "Sergeant"),
    (r"\bGov\.(?=\s)", "Governor"), (r"\bSen\.(?=\s)", "Senator"),
    (r"\bRep\.(?=\s)", "Representative"), (r"\bRev\.(?=\s)", "Reverend"),
    (r"\bFr\.(?=\s)", "Father"), (r"\bMt\.(?=\s)", "Mount"), (r"\bFt\.(?=\s+[A-Z])", "Fort"),
    (r"\bSt\.?(?=\s+[A-Z])", "Saint"), (r"\bSt\.(?=[\s,]|$)", "Street"),
    (r"\bInc\.?(?=[\s,.]|$)", "Incorporated"), (r"\bLtd\.?(?=[\s,.]|$)", "Limited"),
    (r"\bCorp\.(?=[\s,.]|$)", "Corporation"), (r"\bCo\.(?=[\s,]|$)", "Company"),
    (r"\bDept\.?(?=[\s,.]|$)", "Department"), (r"\bapprox\.(?=\s)", "approximately"),
    (r"\b(?:c|ca)\.\s?(?=\d)", "circa "), (r"\bOp\.\s?(?=\d)", "Opus "),
    (r"\b[Nn]o\.\s?(?=\d)", "number "), (r"\b[Nn]os\.\s?(?=\d)", "numbers "),
    (r"\bVol\.\s?(?=\d)", "Volume "), (r"\bpp?\.\s?(?=\d)", "page "),
    (r"\bJan\.(?=\s)", "January"), (r"\bFeb\.(?=\s)", "February"), (r"\bMar\.(?=\s\d)", "March"),
    (r"\bApr\.(?=\s)", "April"), (r"\bJun\.(?=\s)", "June"), (r"\bJul\.(?=\s)", "July"),
    (r"\bAug\.(?=\s)", "August"), (r"\bSept?\.(?=\s)", "September"), (r"\bOct\.(?=\s)", "October"),
    (r"\bNov\.(?=\s)", "November"), (r"\bDec\.(?=\s)", "December"),
]
_ABBREV_RE = [(re.compile(p), r) for p, r in _ABBREV]

_UNITS = {
    "km": "kilometers", "cm": "centimeters", "mm": "millimeters", "m": "meters",
    "kg": "kilograms", "g": "grams", "mg": "milligrams", "lb": "pounds", "lbs": "pounds",
    "ft": "feet", "mi": "miles", "mph": "miles per hour", "km/h": "kilometers per hour",
    "kW": "kilowatts", "MW": "megawatts", "GW": "gigawatts", "kWh": "kilowatt hours",
    "Hz": "hertz", "kHz": "kilohertz", "MHz": "megahertz", "GHz": "gigahertz",
    "GB": "gigabytes", "MB": "megabytes", "TB": "terabytes", "km2": "square kilometers",
    "sq mi": "square miles", "mi2": "square miles", "m2": "square meters",
}
_UNIT_RE = re.compile(
    r"(?<=\d)\s?(" + "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True)) + r")\b"
)
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CURRENCY = {"US$": "dollars", "C$": "dollars", "A$": "dollars", "HK$": "dollars", "$": "dollars",
             "\u00a3": "pounds", "\u20ac": "euros", "\u00a5": "yen"}
_CUR_RE = re.compile(
    r"(US\$|C\$|A\$|HK\$|\$|\u00a3|\u20ac|\u00a5)\s?(" + _NUM + ")"
    r"(\s?(?:thousand|million|billion|trillion|bn|m)\b)?"
)
_ROMAN_RE = re.compile(r"^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")


def _roman_value(tok: str) -> int | None:
    up = tok.upper()
    if not up or not _ROMAN_RE.match(up):
        return None
    vals = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for i, ch in enumerate(up):
        v = vals[ch]
        total += -v if i + 1 < len(up) and vals[up[i + 1]] > v else v
    return total


def _roman_sub(m: re.Match) -> str:
    tok = m.group(0)
    # espeak-ng reads Roman numerals itself ("roman two"); upper-case I/V/X/L strings and
    # lower-case i/v/x strings of length >= 2 are the ones it converts, so we read them first.
    if len(tok) < 2:
        return tok
    if not (re.fullmatch(r"[IVXL]+", tok) or re.fullmatch(r"[ivx]+", tok)):
        return tok
    v = _roman_value(tok)
    return cardinal(v) if v else tok


def _currency_sub(m: re.Match) -> str:
    unit = _CURRENCY[m.group(1)]
    num = m.group(2)
    scale = (m.group(3) or "").strip()
    scale = {"bn": "billion", "m": "million"}.get(scale, scale)
    if not scale and re.fullmatch(r"\d[\d,]*\.\d\d", num):
        whole, cents = num.split(".")
        w = _int_words(whole, allow_year=False)
        unit_w = unit[:-1] if w == "one" and unit != "yen" else unit
        if int(cents):
            return f"{w} {unit_w} and {cardinal(int(cents))} cents"
        return f"{w} {unit_w}"
    w = _number_words(num, allow_year=False)
    if scale:
        return f"{w} {scale} {unit}"
    if w == "one" and unit != "yen":
        unit = unit[:-1]
    return f"{w} {unit}"


def _range_sub(m: re.Match) -> str:
    a, b = m.group(1), m.group(2)
    a_w = _number_words(a)
    if len(a) == 4 and len(b) == 2 and a.isdigit() and b.isdigit():
        b_w = ("oh " + _ONES[int(b)]) if b.startswith("0") and b != "00" else _int_words(b)
        if b == "00":
            b_w = "hundred"
        return f"{a_w} to {b_w}"
    return f"{a_w} to {_number_words(b)}"


def _decade_sub(m: re.Match) -> str:
    digits = m.group(1)
    n = int(digits)
    if len(digits) == 4:
        return _plural_last(year_words(n))
    if len(digits) == 3 and n % 100:  # 880s -> "eight eighties"
        return cardinal(n // 100) + " " + _plural_last(cardinal(n % 100))
    return _plural_last(cardinal(n))


def _time_sub(m: re.Match) -> str:
    h, mm = int(m.group(1)), m.group(2)
    if mm == "00":
        return f"{cardinal(h)} o'clock"
    if mm.startswith("0"):
        return f"{cardinal(h)} oh {_ONES[int(mm)]}"
    return f"{cardinal(h)} {cardinal(int(mm))}"


_DENOM = {2: ("half", "halves"), 4: ("quarter", "quarters")}


def _fraction_sub(m: re.Match) -> str:
    a, b = int(m.group(1)), int(m.group(2))
    if 0 < a < b <= 12:
        sing, plur = _DENOM.get(b, (ordinal(b), ordinal(b) + "s"))
        return f"{cardinal(a)} {sing if a == 1 else plur}"
    return f"{_number_words(m.group(1))} slash {_number_words(m.group(2))}"


def normalize(text: str) -> "Normalized":
    """Rewrite one sentence (or any text) into speakable words; see module docstring."""
    t = clean_unicode(text)
    t = _EDITORIAL.sub(" ", t)
    # Wikipedia page citations glued to punctuation: 'weight.:110', 'you.":54–57 :64'
    t = re.sub(r"(?:(?<=[.,;!?\"')])|(?<=\s)|^):\d+(?:\s?[\u2013-]\s?\d+)?(?:,\s?\d+)*", " ", t)
    # pronunciation guides in IPA ("/ˈfrɛznoʊ/") cannot be read by an English voice: drop
    # the whole token, otherwise its Latin letters survive as junk ("fr zno")
    t = re.sub(r"[/\[]?\S*[\u0250-\u02ff\u1d00-\u1dbf]\S*[/\]]?", " ", t)
    t = re.sub(r"\[([^\]]*)\]", r"\1", t)
    # unicode fractions, degrees, superscripts, math symbols
    t = re.sub(r"(\d)\s?([\u00bd\u2153\u2154\u00bc\u00be])",
               lambda m: m.group(1) + " and " + _FRACTIONS[m.group(2)].replace("one ", "a "), t)
    for ch, w in _FRACTIONS.items():
        t = t.replace(ch, " " + w + " ")
    t = re.sub(r"\u00b0\s?C\b", " degrees Celsius", t)
    t = re.sub(r"\u00b0\s?F\b", " degrees Fahrenheit", t)
    t = t.replace("\u00b0", " degrees ")
    t = re.sub(r"\b(km|mi|m)\u00b2",
               lambda m: {"km": " square kilometers", "mi": " square miles", "m": " square meters"}[m.group(1)], t)
    t = t.replace("\u00b2", " squared ").replace("\u00b3", " cubed ")
    for sym, w in (("\u00b1", " plus or minus "), ("\u00d7", " times "), ("\u2260", " not equal to "),
                   ("\u221a", " square root of "), ("\u2286", " subset of "), ("\u00a7", " section "),
                   ("\u00a2", " cents "), ("=", " equals "), ("&", " and "), ("@", " at "),
                   ("+", " plus "), ("<", " less than "), (">", " greater than ")):
        t = t.replace(sym, w)
    t = re.sub(r"#\s?(?=\d)", "number ", t)
    # abbreviations and dotted acronyms
    for rx, rep in _ABBREV_RE:
        t = rx.sub(rep, t)
    t = re.sub(r"\b[ap]\.m\.", lambda m: m.group(0)[0].upper() + " M", t)
    t = re.sub(r"\b(?:[A-Za-z]\.){2,}", lambda m: " ".join(m.group(0).replace(".", "")) + " ", t)
    t = re.sub(r"\b([A-Z])\.(?=\s+[A-Z])", r"\1", t)  # initials: "J. K. Rowling"
    # numbers: currency, percent, ranges, times, ordinals, decades, fractions, units
    t = _CUR_RE.sub(_currency_sub, t)
    t = re.sub(rf"({_NUM})\s?%\s?[\u2013\u2014-]\s?(?=({_NUM})\s?%)", r"\1 to ", t)  # 30%-50%
    t = re.sub(rf"({_NUM})\s?%", lambda m: _number_words(m.group(1), False) + " percent", t)
    t = t.replace("%", " percent ")
    t = re.sub(rf"(?<![\d.])({_NUM})\s?[\u2013\u2014-]\s?({_NUM})(?![\d])", _range_sub, t)
    t = re.sub(r"\b(\d{1,2}):(\d\d)\b", _time_sub, t)
    t = re.sub(r"\b(\d+):(\d+)\b", r"\1 to \2", t)  # ratios and scores
    t = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: ordinal(int(m.group(1))), t)
    t = re.sub(r"'(\d0)'?s\b", lambda m: _plural_last(cardinal(int(m.group(1)))), t)
    t = re.sub(r"\b(\d{1,3}0)'?s\b", _decade_sub, t)
    t = re.sub(r"\b(\d+)/(\d+)\b", _fraction_sub, t)
    t = _UNIT_RE.sub(lambda m: " " + _UNITS[m.group(1)], t)
    t = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", t)  # MP3 -> MP 3
    t = re.sub(rf"(?<![\w.])-(?=\d)", " minus ", t)
    t = re.sub(rf"(?<![\d])(\.\d+|{_NUM})", lambda m: " " + _number_words(m.group(1)) + " ", t)
    # Roman numerals
    t = re.sub(r"\b[A-Za-z]+\b", _roman_sub, t)
    # punctuation that only shapes prosody
    t = re.sub(r"\s[\u2013\u2014-]+\s|[\u2013\u2014]", ", ", t)
    t = re.sub(r"[()\[\]{}]", ", ", t)
    t = re.sub(r"(?<=\w)-(?=\w)", " ", t)
    t = re.sub(r"[\"*~|_^\\/{}-]", " ", t)
    t = _ascii_fold(t)
    t = re.sub(r"[^A-Za-z0-9'.,;:?! ]", " ", t)
    t = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", t)  # quotes, not apostrophes
    t = re.sub(r"\s+([.,;:?!])", r"\1", t)
    t = re.sub(r"([.,;:?!])(?:\s*[.,;:?!])+", lambda m: m.group(0).replace(" ", "")[-1]
               if m.group(0).replace(" ", "")[-1] in ".?!" else m.group(1), t)
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"^[.,;:?! ]+", "", t)
    return Normalized(tts=t, target=to_target(t))


def to_target(tts_text: str) -> str:
    """Target transcript of an already normalised TTS string: lower case, words only."""
    t = tts_text.lower()
    t = re.sub(r"[^a-z0-9' ]", " ", t)
    t = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", t)
    return re.sub(r"\s+", " ", t).strip()


@dataclass(frozen=True)
class Normalized:
    tts: str  # what espeak-ng is given (case and prosodic punctuation kept)
    target: str  # what the ASR must output (lower-case words)


def chunk_words(norm: Normalized, max_words: int, max_chars: int = 0) -> list[Normalized]:
    """Cut a long normalised sentence into pieces of <= max_words target words (and, if
    max_chars > 0, <= max_chars characters of TTS text: espeak-ng's duration follows the
    characters more closely than the words), preferring breaks after , ; : (natural pauses)."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    tokens = norm.tts.split()
    # a token is one or more target words ("o'clock" is one, "don't" is one)
    lens = [len(to_target(tok).split()) for tok in tokens]
    limit_c = max_chars if max_chars > 0 else 10 ** 9

    def size(toks: list[str]) -> tuple[int, int]:
        return sum(len(to_target(x).split()) for x in toks), len(" ".join(toks))

    if sum(lens) <= max_words and len(norm.tts) <= limit_c:
        return [norm]
    pieces: list[list[str]] = []
    cur: list[str] = []
    cur_len = cur_chars = 0
    last_pause = -1
    for tok, n in zip(tokens, lens):
        if cur and (cur_len + n > max_words or cur_chars + 1 + len(tok) > limit_c):
            if last_pause >= 0 and last_pause >= len(cur) // 3:
                head, cur = cur[: last_pause + 1], cur[last_pause + 1:]
            else:
                head, cur = cur, []
            pieces.append(head)
            cur_len, cur_chars = size(cur)
            last_pause = max((i for i, x in enumerate(cur) if x[-1] in ",;:"), default=-1)
        cur.append(tok)
        cur_len += n
        cur_chars += len(tok) + (1 if len(cur) > 1 else 0)
        if tok[-1] in ",;:":
            last_pause = len(cur) - 1
    if cur:
        pieces.append(cur)
    out = []
    for p in pieces:
        tts = " ".join(p).rstrip(",;:")
        tgt = to_target(tts)
        if tgt:
            out.append(Normalized(tts=tts, target=tgt))
    return out


def espeak_expansions(words: list[str], voice: str = "en-us", espeak: str = "espeak-ng",
                      batch: int = 2000) -> dict[str, str]:
    """Audit: return {word: phonemes} for target words that espeak-ng says as more than one
    word (e.g. 'etc' -> 'etcetera' is fine, but 'ii' -> 'roman two' is not).

    Each word is given to espeak-ng as its own sentence; a phoneme string containing a space
    means espeak expanded it.  Letter-by-letter spelling ("nfl") stays one phoneme word.
    """
    words = [w for w in words if re.fullmatch(r"[a-z']+", w)]
    found: dict[str, str] = {}
    for i in range(0, len(words), batch):
        chunk = words[i:i + batch]
        text = "\n".join(f"{w}." for w in chunk) + "\n"
        res = subprocess.run([espeak, "-q", "-x", "-v", voice], input=text.encode(),
                             capture_output=True, check=True)
        lines = [ln.strip() for ln in res.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
        if len(lines) != len(chunk):  # lost alignment: fall back to one call per word
            lines = []
            for w in chunk:
                r = subprocess.run([espeak, "-q", "-x", "-v", voice, w + "."], capture_output=True,
                                   check=True)
                lines.append(" ".join(r.stdout.decode("utf-8", "replace").split()))
        for w, ph in zip(chunk, lines):
            if " " in ph.strip():
                found[w] = ph.strip()
    return found
