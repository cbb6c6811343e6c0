"""The API takes exactly the user ids the stream takes: the wire contract's check (NFC, at most 128 UTF-8 *bytes*,
the ``VARCHAR(128)`` of Milvus, no whitespace or control characters), on ``/recommend`` and ``/ab/{user_id}``, with
a 422 naming the rule; an id typed decomposed is served as its NFC form, and a user token whose ``sub`` is that user
asks for it however either side typed it. The real app and real tokens over an in-memory recommender; no
services."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

import pytest

from contracts.events import UserEvent
from ranking.online.pipeline import USER_ID_RULE, Recommendation
from serving.api import create_apps
from serving.auth import mint_token
from tests.unit.serving.helpers import JWT_SECRET, FakeRecommender, clients, serving, settings, typed

EURO = "\u20ac"  # 3 bytes in UTF-8
NFC_JOSE = "jos\u00e9"
NFD_JOSE = "jose\u0301"


class _Recording(FakeRecommender):
    """The fake recommender, keeping the user ids it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Recommendation:
        self.asked.append(user_id)
        return super().recommend(user_id, k, variant)


def _stream_accepts(user_id: str) -> bool:
    try:
        UserEvent.model_validate({"user_id": user_id, "item_id": "i1", "action": "play",
                                  "ts": "2026-01-01T00:00:00Z"})
    except ValueError:
        return False
    return True


REFUSED = {
    "100 chars of 3 bytes": EURO * 100,  # 100 characters, 300 bytes: the old character bound let it through
    "129 bytes": EURO * 43,
    "a space": "a b",
    "a tab": "a\tb",
    "a line separator": "a\u2028b",
    "a DEL": "a\x7fb",
}


@pytest.mark.parametrize("user_id", list(REFUSED.values()), ids=list(REFUSED))
def test_an_id_the_stream_refuses_is_a_422_naming_the_rule(user_id: str) -> None:
    assert not _stream_accepts(user_id)
    rec = _Recording()
    with serving(lambda: typed(rec)) as (c, _):
        r = c.get("/recommend", params={"user_id": user_id})
        assert (r.status_code, r.json()) == (422, {"detail": USER_ID_RULE})
        r = c.get("/ab/" + quote(user_id, safe=""))
        assert (r.status_code, r.json()) == (422, {"detail": USER_ID_RULE})
    assert rec.asked == []


@pytest.mark.parametrize("user_id", [EURO * 42, "x" * 128, "u1", NFC_JOSE], ids=["126 bytes", "128 bytes", "ascii",
                                                                                 "nfc"])
def test_an_id_the_stream_accepts_is_served(user_id: str) -> None:
    assert _stream_accepts(user_id)
    rec = _Recording()
    with serving(lambda: typed(rec)) as (c, _):
        r = c.get("/recommend", params={"user_id": user_id, "k": 1})
        assert r.status_code == 200 and r.json()["user_id"] == user_id
        assert c.get("/ab/" + quote(user_id, safe="")).status_code == 200
    assert rec.asked == [user_id]


def test_a_decomposed_id_is_served_as_the_nfc_user() -> None:
    assert NFD_JOSE != NFC_JOSE and unicodedata.normalize("NFC", NFD_JOSE) == NFC_JOSE
    rec = _Recording()
    with serving(lambda: typed(rec)) as (c, _):
        r = c.get("/recommend", params={"user_id": NFD_JOSE, "k": 1})
        assert r.status_code == 200 and r.json()["user_id"] == NFC_JOSE
        nfd, nfc = c.get("/ab/" + quote(NFD_JOSE)).json(), c.get("/ab/" + quote(NFC_JOSE)).json()
    assert rec.asked == [NFC_JOSE]
    assert nfd == nfc and nfd["user_id"] == NFC_JOSE and nfd["bucket"] == rec.ab.assign(NFC_JOSE).bucket


@pytest.mark.parametrize(("sub", "asked"), [(NFC_JOSE, NFD_JOSE), (NFD_JOSE, NFC_JOSE), (NFD_JOSE, NFD_JOSE)],
                         ids=["nfc-sub", "nfd-sub", "both-nfd"])
def test_a_user_token_asks_for_its_user_however_it_is_typed(sub: str, asked: str) -> None:
    rec = _Recording()
    apps = create_apps(settings({"jwt_secret": JWT_SECRET}), served=lambda: typed(rec))
    headers: dict[str, Any] = {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub)}"}
    with clients(apps) as (c, _):
        r = c.get("/recommend", params={"user_id": asked, "k": 1}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == NFC_JOSE
        assert c.get("/ab/" + quote(asked), headers=headers).status_code == 200
        other = c.get("/recommend", params={"user_id": "jose", "k": 1}, headers=headers)
        assert other.status_code == 403
    assert rec.asked == [NFC_JOSE]
