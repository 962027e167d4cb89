"""Fetching the gift pictures HQ's catalogue names and this kiosk lacks.

HQ keeps each picture's chunks retained on ``hq/picture/<sha256>/<index>``. For a picture a
gift names and ``pictures/`` does not hold, the agent subscribes to its chunks, joins them as
they come and unsubscribes; the whole is kept only if it has the SHA-256 the catalogue gave
and passes the picture checks (:func:`edge.services.pictures.take_picture`). A picture that
fails is logged and not asked for again until the agent restarts; a picture that does not
come in full within :data:`GIVE_UP_S` is asked for again later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from edge.app import AppContext
from edge.domain.errors import InvalidInput
from edge.protocol import PictureChunk, ProtocolError, Topics
from edge.protocol.link import MqttLink
from edge.services.pictures import shown_path, take_picture
from edge.storage.models import Gift

log = logging.getLogger(__name__)

AT_ONCE = 4  # pictures being fetched at the same time
GIVE_UP_S = 120.0


@dataclass
class _Fetching:
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    count: int = 0


class PictureFetcher:
    """The pictures being fetched for one agent."""

    def __init__(self, app: AppContext, link: MqttLink, topics: Topics) -> None:
        self.app, self.link, self.topics = app, link, topics
        self.fetching: dict[str, _Fetching] = {}
        self.refused: set[str] = set()
        self.kept = 0

    def missing(self) -> list[str]:
        """The pictures the active gifts name and this kiosk does not hold."""
        with self.app.db.read() as session:
            named = session.scalars(
                select(Gift.picture).where(Gift.active.is_(True), Gift.picture.is_not(None))
            )
            return sorted({str(sha) for sha in named if shown_path(self.app, sha) is None})

    def ask(self) -> None:
        """Subscribes to the chunks of the missing pictures, a few at a time; gives up on
        one that did not come in full in time (it is asked for again later)."""
        now = time.monotonic()
        for sha, fetching in list(self.fetching.items()):
            if now - fetching.started > GIVE_UP_S:
                log.warning("picture %s did not come in full from HQ: asking again later", sha)
                self._done(sha)
        if not self.link.connected:
            return
        for sha in self.missing():
            if len(self.fetching) >= AT_ONCE:
                break
            if sha in self.fetching or sha in self.refused:
                continue
            self.fetching[sha] = _Fetching(now)
            self.link.subscribe(self.topics.picture_chunks(sha), qos=1)

    def take(self, topic: str, chunk: PictureChunk) -> None:
        """One chunk; the picture is checked and kept once all its chunks are here."""
        if topic != self.topics.picture(chunk.sha256, chunk.index):
            raise ProtocolError(f"picture chunk of {chunk.sha256[:12]} on another's topic")
        fetching = self.fetching.get(chunk.sha256)
        if fetching is None:
            return  # a chunk of a picture already kept or given up
        if fetching.count and fetching.count != chunk.count:
            raise ProtocolError(f"picture {chunk.sha256[:12]}: chunks disagree on their count")
        fetching.count = chunk.count
        fetching.chunks[chunk.index] = chunk.raw()
        if len(fetching.chunks) < chunk.count:
            return
        data = b"".join(fetching.chunks[i] for i in range(chunk.count))
        self._done(chunk.sha256)
        try:
            take_picture(self.app, data, chunk.sha256)
        except InvalidInput as exc:
            self.refused.add(chunk.sha256)
            log.error("picture %s from HQ refused: %s", chunk.sha256, exc)
            return
        self.kept += 1
        log.info("picture %s from HQ kept", chunk.sha256)

    def restart(self) -> None:
        """After a reconnect the subscriptions are gone: fetch again from the start."""
        self.fetching.clear()

    def _done(self, sha: str) -> None:
        self.fetching.pop(sha, None)
        self.link.unsubscribe(self.topics.picture_chunks(sha))
