"""Tag vocabulary of the music corpus: documented mappings from real music21 metadata to clean tags.

Every clip gets these tag fields (all strings):

* ``composer`` — normalised composer name. Single-composer corpus folders (``bach``, ``palestrina``, ...) map
  to their composer whatever the messy metadata says (Monteverdi's madrigals often name the poet). In the folk
  collections the metadata "composer" is mostly a provenance note (``"Irish."``, ``"collected by F.O'Neill"``)
  so those clips are ``"traditional"`` unless the note names a known composer (:data:`COMPOSER_ALIASES`).
  Multi-composer folders (``trecento``, ``leadSheet``) use the normalised metadata name, ``"anonymous"``
  when missing.
* ``collection`` — the corpus folder, e.g. ``essenFolksong``, ``oneills1850``, ``bach``.
* ``region`` — where the music comes from. Essen folksongs: the first country of the tune's own ``O:``
  origin field (``localeOfComposition``), translated from German (:data:`ESSEN_REGIONS`); other collections:
  :data:`COLLECTION_REGION` (the collection's origin, or the composer's main country).
* ``era`` — :data:`COLLECTION_ERA`: ``medieval``, ``renaissance``, ``baroque``, ``classical``, ``romantic``,
  ``modern``, or ``traditional`` for the folk-tune collections (undated oral tradition).
* ``instrument`` — the General MIDI program the clip was rendered with (:data:`GM_INSTRUMENTS`).
* ``tempo`` — bucket of the rendered tempo in beats per minute (:data:`TEMPO_BUCKETS`).
* ``key`` / ``mode`` — tonic and mode from the notated key signature (see :func:`key_and_mode`);
  ``key_signature`` — the notated signature itself, e.g. ``"2#"``, ``"1b"``, ``"0"``.
* ``metre`` — the notated time signature in force for most of the score (a pickup signature loses), e.g.
  ``"6/8"``; ``"free"`` if none.
* ``texture`` — ``monophonic`` (one sounding part in the excerpt) or ``polyphonic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TAG_FIELDS: tuple[str, ...] = (
    "composer",
    "collection",
    "region",
    "era",
    "instrument",
    "tempo",
    "key",
    "mode",
    "key_signature",
    "metre",
    "texture",
)

# General MIDI programs (0-based) used for rendering, with the tag written for each. A clip's instrument is
# chosen deterministically from this list (hash of seed and source), so every timbre is about equally common.
GM_INSTRUMENTS: tuple[tuple[int, str], ...] = (
    (0, "piano"),
    (6, "harpsichord"),
    (19, "organ"),
    (24, "acoustic guitar"),
    (40, "violin"),
    (42, "cello"),
    (46, "harp"),
    (48, "strings"),
    (52, "choir"),
    (56, "trumpet"),
    (68, "oboe"),
    (71, "clarinet"),
    (73, "flute"),
    (21, "accordion"),
)

# Tempo buckets in beats per minute of the notated beat (dotted quarter in 6/8, half note in 2/2, ...).
# Lower bound inclusive, upper bound exclusive. A clip draws a bucket uniformly, then a tempo inside it.
TEMPO_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("slow", 50, 76),
    ("moderate", 76, 108),
    ("fast", 108, 144),
    ("very fast", 144, 184),
)

FOLK_COLLECTIONS: frozenset[str] = frozenset(
    {"essenFolksong", "oneills1850", "airdsAirs", "ryansMammoth", "miscFolk", "nottingham-dataset"}
)

# Folders holding one composer's works: the folder wins over the metadata field.
COLLECTION_COMPOSER: dict[str, str] = {
    "bach": "Johann Sebastian Bach",
    "palestrina": "Giovanni Pierluigi da Palestrina",
    "monteverdi": "Claudio Monteverdi",
    "josquin": "Josquin des Prez",
    "beethoven": "Ludwig van Beethoven",
    "mozart": "Wolfgang Amadeus Mozart",
    "haydn": "Joseph Haydn",
    "schumann_robert": "Robert Schumann",
    "schumann_clara": "Clara Schumann",
    "schoenberg": "Arnold Schoenberg",
    "beach": "Amy Beach",
    "ciconia": "Johannes Ciconia",
    "chopin": "Frederic Chopin",
    "corelli": "Arcangelo Corelli",
    "cpebach": "Carl Philipp Emanuel Bach",
    "handel": "George Frideric Handel",
    "johnson_j_r": "J. Rosamond Johnson",
    "joplin": "Scott Joplin",
    "liliuokalani": "Liliuokalani",
    "luca": "D. Luca",
    "lusitano": "Vicente Lusitano",
    "verdi": "Giuseppe Verdi",
    "schubert": "Franz Schubert",
    "weber": "Carl Maria von Weber",
    "webern": "Anton Webern",
}

# Regular expressions (matched case-insensitively against the metadata composer) -> canonical name. Used for
# multi-composer folders and to keep real names found in folk collections.
COMPOSER_ALIASES: tuple[tuple[str, str], ...] = (
    (r"ciconia", "Johannes Ciconia"),
    (r"jacopo da bologna", "Jacopo da Bologna"),
    (r"landini", "Francesco Landini"),
    (r"vitry", "Philippe de Vitry"),
    (r"gherardello", "Gherardello da Firenze"),
    (r"o'?carolan", "Turlough O'Carolan"),
    (r"dibdin", "Charles Dibdin"),
    (r"neil gow", "Niel Gow"),
    (r"irving berlin", "Irving Berlin"),
    (r"stephen foster", "Stephen Foster"),
    (r"\bbach\b", "Johann Sebastian Bach"),
    (r"anonym", "anonymous"),
)

COLLECTION_ERA: dict[str, str] = {
    "essenFolksong": "traditional",
    "oneills1850": "traditional",
    "airdsAirs": "traditional",
    "ryansMammoth": "traditional",
    "miscFolk": "traditional",
    "nottingham-dataset": "traditional",
    "trecento": "medieval",
    "ciconia": "medieval",
    "palestrina": "renaissance",
    "josquin": "renaissance",
    "lusitano": "renaissance",
    "luca": "renaissance",
    "monteverdi": "renaissance",  # the madrigal books in the corpus date from 1587-1605
    "bach": "baroque",
    "handel": "baroque",
    "corelli": "baroque",
    "cpebach": "classical",
    "haydn": "classical",
    "mozart": "classical",
    "beethoven": "classical",  # the string quartets op. 18 and op. 59
    "schubert": "romantic",
    "weber": "romantic",
    "schumann_robert": "romantic",
    "schumann_clara": "romantic",
    "chopin": "romantic",
    "verdi": "romantic",
    "liliuokalani": "romantic",
    "beach": "modern",
    "joplin": "modern",
    "johnson_j_r": "modern",
    "schoenberg": "modern",
    "webern": "modern",
    "leadSheet": "modern",
}

COLLECTION_REGION: dict[str, str] = {
    "oneills1850": "ireland",
    "airdsAirs": "scotland",  # Aird's Selection of Scotch, English, Irish and Foreign Airs (Glasgow)
    "ryansMammoth": "north america",  # Ryan's Mammoth Collection (Boston, 1883)
    "nottingham-dataset": "england",
    "trecento": "italy",
    "ciconia": "italy",
    "palestrina": "italy",
    "josquin": "france",
    "lusitano": "portugal",
    "luca": "italy",
    "monteverdi": "italy",
    "bach": "germany",
    "handel": "england",
    "corelli": "italy",
    "cpebach": "germany",
    "haydn": "austria",
    "mozart": "austria",
    "beethoven": "austria",
    "schubert": "austria",
    "weber": "germany",
    "schumann_robert": "germany",
    "schumann_clara": "germany",
    "chopin": "poland",
    "verdi": "italy",
    "liliuokalani": "hawaii",
    "beach": "north america",
    "joplin": "north america",
    "johnson_j_r": "north america",
    "schoenberg": "austria",
    "webern": "austria",
    "leadSheet": "north america",
}

# miscFolk holds two opus files of different origin.
MISCFOLK_REGION: dict[str, str] = {
    "americanfifeopus": "north america",
    "northumbrianminstrelsyopus": "england",
}

# Essen origin tokens (German, as in the ``O:`` field) -> region tag. Matched as prefixes after lower-casing.
ESSEN_REGIONS: tuple[tuple[str, str], ...] = (
    ("deutschland", "germany"),
    ("china", "china"),
    ("ostasien", "china"),
    ("yunnan", "china"),
    ("hunan", "china"),
    ("luxemburg", "luxembourg"),
    ("lothringen", "lorraine"),
    ("elsass", "alsace"),
    ("irland", "ireland"),
    ("schottland", "scotland"),
    ("england", "england"),
    ("niederlande", "netherlands"),
    ("holland", "netherlands"),
    ("flamen", "belgium"),
    ("flaemisch", "belgium"),
    ("brabant", "belgium"),
    ("belgien", "belgium"),
    ("frankreich", "france"),
    ("franzoesische schweiz", "switzerland"),
    ("schweiz", "switzerland"),
    ("emmenthal", "switzerland"),
    ("appenzell", "switzerland"),
    ("entlebu", "switzerland"),
    ("oberhasli", "switzerland"),
    ("siebethal", "switzerland"),
    ("oesterreich", "austria"),
    ("ober - oesterreich", "austria"),
    ("unter - oesterreich", "austria"),
    ("nieder - oesterreich", "austria"),
    ("oberoesterreich", "austria"),
    ("tirol", "austria"),
    ("steiermark", "austria"),
    ("suedosteuropa", "southeastern europe"),
    ("ungarn", "hungary"),
    ("tschechoslowakei", "czechoslovakia"),
    ("boehmen", "czechoslovakia"),
    ("polen", "poland"),
    ("udssr", "russia"),
    ("russland", "russia"),
    ("schweden", "sweden"),
    ("daenemark", "denmark"),
    ("norwegen", "norway"),
    ("finnland", "finland"),
    ("island", "iceland"),
    ("italien", "italy"),
    ("rumaenien", "romania"),
    ("nord - amerika", "north america"),
    ("amerika", "north america"),
    ("sued - amerika", "south america"),
)

# Fallback region per Essen file family when the origin field is missing or unrecognised.
ESSEN_FILE_REGION: dict[str, str] = {"han": "china", "lux": "luxembourg", "lot": "lorraine", "irl": "ireland"}

_ESSEN_SKIP = {"europa", "mitteleuropa", "miteleuropa", "westeuropa", "osteuropa", "nordeuropa", "asien", "opa"}

COLLECTION_LABELS: dict[str, str] = {
    "essenFolksong": "the Essen folksong collection",
    "oneills1850": "O'Neill's Music of Ireland",
    "airdsAirs": "Aird's Selection of Airs",
    "ryansMammoth": "Ryan's Mammoth Collection",
    "miscFolk": "a collection of fife and minstrelsy tunes",
    "nottingham-dataset": "the Nottingham folk tune dataset",
    "bach": "the Bach chorales",
    "palestrina": "Palestrina's masses",
    "monteverdi": "Monteverdi's madrigals",
    "josquin": "Josquin's chansons",
    "trecento": "the Italian trecento repertoire",
}

MODE_NAMES: dict[int, str] = {
    0: "major",
    2: "dorian",
    4: "phrygian",
    5: "lydian",
    7: "mixolydian",
    9: "minor",
    11: "locrian",
}


def essen_family(corpus_path: str) -> str:
    """Returns the Essen file family (file stem without trailing digits), e.g. ``erk`` for ``erk10.abc``."""
    stem = corpus_path.rsplit("/", 1)[-1].split(".", 1)[0]
    return re.sub(r"\d+$", "", stem)


def collection_of(corpus_path: str) -> str:
    """Returns the collection (top-level corpus folder) of a corpus path like ``essenFolksong/han1.abc``."""
    return corpus_path.split("/", 1)[0]


def normalize_composer(collection: str, raw: str | None) -> str:
    """Maps a collection and the raw metadata composer to a canonical composer tag.

    Args:
        collection: Top-level corpus folder.
        raw: ``metadata.composer`` as stored by music21 (may be ``None`` or a provenance note).

    Returns:
        The folder's composer for single-composer folders; a known composer matched by
        :data:`COMPOSER_ALIASES`; ``"traditional"`` in folk collections otherwise; else the cleaned raw name,
        or ``"anonymous"``.
    """
    if collection in COLLECTION_COMPOSER:
        return COLLECTION_COMPOSER[collection]
    text = " ".join((raw or "").replace('"', " ").split())
    for pattern, name in COMPOSER_ALIASES:
        if text and re.search(pattern, text, flags=re.IGNORECASE):
            return name
    if collection in FOLK_COLLECTIONS:
        return "traditional"
    text = re.sub(r"\s*\(.*?\)\s*", " ", text).strip(" .,;")
    return text or "anonymous"


def essen_region(locale: str | None, corpus_path: str) -> str:
    """Region of an Essen folksong from its origin field (``O:``, e.g. ``"Europa, Mitteleuropa, Deutschland"``).

    The first token that is not a continent is looked up in :data:`ESSEN_REGIONS` (``"Deutschland; Frankreich"``
    gives ``germany``); unknown or missing origins fall back to the file family (:data:`ESSEN_FILE_REGION`),
    else ``germany`` (the Essen collection's German core).
    """
    for token in re.split(r"[,;/]", locale or ""):
        t = re.sub(r"\(.*", "", token).strip().lower()
        if not t or t in _ESSEN_SKIP:
            continue
        best = ""
        region = None
        for prefix, name in ESSEN_REGIONS:
            if t.startswith(prefix) and len(prefix) > len(best):
                best, region = prefix, name
        if region is not None:
            return region
        break
    return ESSEN_FILE_REGION.get(essen_family(corpus_path), "germany")


def region_of(collection: str, corpus_path: str, locale: str | None) -> str:
    """Returns the region tag of a corpus entry (see the module docstring)."""
    if collection == "essenFolksong":
        return essen_region(locale, corpus_path)
    if collection == "miscFolk":
        return MISCFOLK_REGION.get(corpus_path.rsplit("/", 1)[-1].split(".", 1)[0], "unknown")
    return COLLECTION_REGION.get(collection, "unknown")


def era_of(collection: str) -> str:
    """Returns the era tag of a collection (:data:`COLLECTION_ERA`; ``"unknown"`` otherwise)."""
    return COLLECTION_ERA.get(collection, "unknown")


def tempo_bucket(beat_bpm: float) -> str:
    """Returns the :data:`TEMPO_BUCKETS` name holding ``beat_bpm`` (clamped to the outer buckets)."""
    for name, lo, hi in TEMPO_BUCKETS:
        if lo <= beat_bpm < hi:
            return name
    return TEMPO_BUCKETS[0][0] if beat_bpm < TEMPO_BUCKETS[0][1] else TEMPO_BUCKETS[-1][0]


def key_signature_tag(sharps: int) -> str:
    """Formats a key signature: ``2`` -> ``"2#"``, ``-1`` -> ``"1b"``, ``0`` -> ``"0"``."""
    if sharps > 0:
        return f"{sharps}#"
    if sharps < 0:
        return f"{-sharps}b"
    return "0"


# Modes a final note may name, per era (see :func:`key_and_mode`). Folk melodies often end on the 3rd or 5th of a
# major tune, so only the modes folk musicians actually notate count there; early polyphony ends on its final
# (every church mode but locrian); later art music: major/minor only.
MODES_BY_ERA: dict[str, frozenset[str]] = {
    "traditional": frozenset({"major", "minor", "dorian", "mixolydian"}),
    "medieval": frozenset({"major", "minor", "dorian", "phrygian", "lydian", "mixolydian"}),
    "renaissance": frozenset({"major", "minor", "dorian", "phrygian", "lydian", "mixolydian"}),
}
MAJOR_MINOR: frozenset[str] = frozenset({"major", "minor"})


def key_and_mode(
    sharps: int,
    final_pc: int | None,
    notated_tonic: str | None,
    notated_mode: str | None,
    modes: frozenset[str] = MAJOR_MINOR,
) -> tuple[str, str, str]:
    """Derives the tonic and mode of a piece from its notated key signature.

    Rule, in order:

    1. a notated key (ABC ``K:Gm``/``K:Ador``, MusicXML ``<mode>``) whose tonic is the final note of the piece:
       as written;
    2. the final note (lowest pitch sounding at the end) read on the signature's diatonic scale, if the mode
       it names is in ``modes`` (final on the 6th degree of the signature's major scale -> ``minor``, 2nd ->
       ``dorian``, 5th -> ``mixolydian``, 3rd -> ``phrygian``, 4th -> ``lydian``). Callers pass
       :data:`MODES_BY_ERA`: folk melodies often end on the 3rd or 5th of a major tune, and later art music
       often ends elsewhere in the written score (da capo arias, movements), so fewer modes are trusted
       there. This also fixes sources that notate only the signature (the Essen songs' ``K:G`` is read as G
       major even when the tune ends on E, i.e. is in E minor);
    3. the notated key if any; else the major key of the signature.

    The result always has the notated signature. ``analyze('key')`` is deliberately not used: it is unreliable
    on short excerpts.

    Args:
        sharps: Notated key signature (positive sharps, negative flats).
        final_pc: Pitch class (0-11) of the final bass note, or ``None``.
        notated_tonic: Tonic name of a notated ``Key`` object (e.g. ``"G"``, ``"B-"``), or ``None``.
        notated_mode: Its mode (``"major"``, ``"minor"``, ``"dorian"``, ...), or ``None``.
        modes: Modes the final note may name (rule 2).

    Returns:
        ``(tonic, mode, rule)`` with the tonic spelled like ``"F#"`` or ``"Bb"`` and ``rule`` one of
        ``"notated"``, ``"final"``, ``"signature"``.
    """
    from music21 import key as m21key
    from music21 import pitch as m21pitch

    major_tonic = m21key.KeySignature(sharps).asKey("major").tonic
    major_pc = major_tonic.pitchClass

    def spell(p: m21pitch.Pitch) -> str:
        return p.name.replace("-", "b")

    notated = None
    if notated_tonic and notated_mode in set(MODE_NAMES.values()) | {"ionian", "aeolian"}:
        mode = {"ionian": "major", "aeolian": "minor"}.get(notated_mode, notated_mode)
        notated_pitch = m21pitch.Pitch(notated_tonic)
        if m21key.Key(notated_pitch.name, mode).sharps == sharps:
            notated = (spell(notated_pitch), mode, notated_pitch.pitchClass)
    if notated is not None and final_pc is not None and notated[2] == final_pc:
        return notated[0], notated[1], "notated"
    if final_pc is not None:
        degree = (final_pc - major_pc) % 12
        if degree in MODE_NAMES and MODE_NAMES[degree] in modes:
            # spell the final as a member of the signature's major scale
            scale = m21key.Key(major_tonic.name, "major").getPitches()
            name = next(p for p in scale if p.pitchClass == final_pc)
            return spell(name), MODE_NAMES[degree], "final"
    if notated is not None:
        return notated[0], notated[1], "notated"
    return spell(major_tonic), "major", "signature"


def make_caption(tags: Mapping[str, str]) -> str:
    """Builds a one-sentence English caption from a clip's tags.

    Example: ``"A traditional folk tune from lorraine (the Essen folksong collection), played on flute;
    G major, 3/4 metre, fast tempo."``
    """
    collection = tags.get("collection", "")
    label = COLLECTION_LABELS.get(collection, f"the {collection} collection")
    texture = tags.get("texture", "")
    region = tags.get("region", "unknown")
    where = f" from {region.title()}" if region != "unknown" else ""
    if tags.get("era") == "traditional":
        composer = tags.get("composer", "traditional")
        head = "A traditional folk tune" if composer == "traditional" else f"A folk tune by {composer}"
        head += f"{where} ({label})"
    else:
        era = tags.get("era", "")
        article = "An" if texture[:1] in "aeiou" and texture else "A"
        head = f"{article} {texture} {era} piece by {tags.get('composer', 'anonymous')}{where}"
    mode = tags.get("mode", "")
    key = f"{tags.get('key', '')} {mode}".strip()
    metre = tags.get("metre", "free")
    metre_text = "free metre" if metre == "free" else f"{metre} metre"
    return f"{head}, played on {tags.get('instrument', '')}; {key}, {metre_text}, {tags.get('tempo', '')} tempo."
