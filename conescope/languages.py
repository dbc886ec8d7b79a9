"""Language codes: the profile speaks ISO 639 (``en``, ``fr``, ``fil``, ``quz``); some text towers want
their own codes. NLLB-CLIP (Visheratin 2023) tokenizes with the NLLB-200 source-language token
(``fra_Latn``), so each text partition sets its tokenizer's language before embedding (the open_clip
kind's ``set_language``, ``conescope/model_kinds/open_clip.py``).

The table covers the 36 languages of Crossmodal-3600 plus the Multi30k and WikiCaps ones. Where NLLB-200
has no exact match the nearest variety is used and named here: ``fa`` -> Western Persian (pes_Arab),
``fil`` -> Tagalog (tgl_Latn), ``no`` -> Bokmål (nob_Latn), ``quz`` (Cusco Quechua) -> Ayacucho Quechua
(quy_Latn), ``sw`` -> Swahili (swh_Latn), ``zh`` -> Simplified Chinese (zho_Hans).
"""

from __future__ import annotations

NLLB_CODES = {
    "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fil": "tgl_Latn", "fr": "fra_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "mi": "mri_Latn", "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "quz": "quy_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn",
    "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh": "zho_Hans",
}


def uses_nllb_codes(arch: str) -> bool:
    return arch.startswith("nllb-clip")


def nllb_code(lang: str) -> str:
    try:
        return NLLB_CODES[lang]
    except KeyError:
        raise ValueError(f"language {lang!r} has no NLLB-200 code in conescope.languages.NLLB_CODES "
                         f"(known: {', '.join(sorted(NLLB_CODES))})") from None

