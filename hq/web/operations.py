"""The console's catalogue and rules, and update rollouts: pages over :mod:`hq.catalogue`,
:mod:`hq.bundles` and :mod:`hq.rollouts`, the functions ``kiosk hq catalogue|rules|rollout``
call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from edge.domain.errors import InvalidInput, NotFound
from hq import rollouts
from hq.accounts import Permission
from hq.bundles import add_bundle, bundle_file, list_bundles, load_update_key
from hq.catalogue import CatalogueDesk, applied_versions, checked_picture
from hq.catalogue_cli import parse_setting
from hq.catalogue_diff import rules_fields
from hq.stock import store_stock
from hq.web.core import Console, Page

MAX_PICTURE = 8 * 1024 * 1024


def _int(text: str, what: str, *, optional: bool = False) -> int | None:
    text = text.strip()
    if not text and optional:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number", code="bad_number") from None


def _based_on(page: Page) -> int | None:
    return _int(page.field("based_on"), "the version", optional=True)


def _upload(page: Page, name: str) -> UploadFile | None:
    value = page.form.get(name) if page.form is not None else None
    return value if isinstance(value, UploadFile) and value.filename else None


def catalogue_routes(console: Console) -> list[BaseRoute]:
    def desk() -> CatalogueDesk:
        return CatalogueDesk(console.engine, console.publisher, console.clock)

    def catalogue_page(page: Page) -> Response:
        d = desk()
        try:
            catalogue = d.catalogue().catalogue
        except NotFound:
            catalogue = None
        try:
            rules = d.rules().rules
        except NotFound:
            rules = None
        history = sorted(
            d.history("catalogue", 20) + d.history("rules", 20), key=lambda v: v.at, reverse=True
        )
        stock_total: dict[str, int] = {}
        stock_detail: dict[str, str] = {}
        for s in store_stock(page.session):
            stock_total[s.sku] = stock_total.get(s.sku, 0) + s.stock
            stock_detail[s.sku] = (
                stock_detail.get(s.sku, "") + f"{s.store_id}: {s.stock}  "
            ).strip()
        applied = applied_versions(page.session)
        return page.render(
            "catalogue.html",
            catalogue=catalogue,
            rules=rules,
            rules_fields=sorted(rules_fields(rules).items()) if rules is not None else [],
            history=history[:30],
            applied=applied,
            behind_catalogue=applied.behind("catalogue"),
            behind_rules=applied.behind("rules"),
            stock_total=stock_total,
            stock_detail=stock_detail,
        )

    def version_page(page: Page) -> Response:
        kind = page.request.path_params["kind"]
        version = int(page.request.path_params["version"])
        d = desk()
        if kind == "catalogue":
            row = d.catalogue(version).row
            lines = d.catalogue_diff(None if version <= 1 else version - 1, version).lines()
        elif kind == "rules":
            row = d.rules(version).row
            lines = d.rules_diff(None if version <= 1 else version - 1, version).lines()
        else:
            raise NotFound(f"no {kind[:20]} versions")
        return page.render("version.html", kind=kind, version=version, row=row, lines=lines)

    def said(page: Page, recorded: Any) -> Response:
        kind = page.t("Catalogue") if recorded.kind == "catalogue" else page.t("Rules")
        if recorded.published:
            text = f"{kind} v{recorded.version}: " + page.t("saved and pushed to the stores")
        else:
            text = f"{kind} v{recorded.version}: " + page.t(
                "saved; not pushed yet, HQ pushes it when the broker can be reached"
            )
        return page.done(text, "/catalogue")

    def set_gift(page: Page) -> Response:
        changes: dict[str, Any] = {}
        if page.field("name").strip():
            changes["name"] = page.field("name").strip()
        for field in ("points_price", "per_member_limit", "low_stock"):
            value = _int(page.field(field), field.replace("_", " "), optional=True)
            if value is not None:
                changes[field] = value
        upload = _upload(page, "picture")
        picture = None
        if upload is not None:
            data = upload.file.read(MAX_PICTURE + 1)
            if len(data) > MAX_PICTURE:
                raise InvalidInput("the picture is larger than 8 MB", code="bad_picture")
            picture = checked_picture(data, upload.filename or "the picture")
        recorded = desk().set_gift(
            page.actor,
            page.field("sku").strip(),
            changes,
            picture=picture,
            based_on=_based_on(page),
            note=page.field("note"),
        )
        return said(page, recorded)

    def retire(page: Page) -> Response:
        recorded = desk().retire_gift(
            page.actor,
            page.request.path_params["sku"],
            based_on=_based_on(page),
            note=page.field("note") or "retired",
        )
        return said(page, recorded)

    def set_rule(page: Page) -> Response:
        field, value = parse_setting(f"{page.field('field').strip()}={page.field('value')}")
        recorded = desk().set_rules(
            page.actor, {field: value}, based_on=_based_on(page), note=page.field("note")
        )
        return said(page, recorded)

    def picture(page: Page) -> Response:
        data = desk().picture(page.request.path_params["sha256"])
        if data is None:
            raise NotFound("no such picture")
        kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        return Response(data, media_type=kind, headers={"cache-control": "max-age=86400"})

    change = console.change
    return [
        Route("/catalogue", console.view(catalogue_page)),
        Route("/catalogue/versions/{kind}/{version:int}", console.view(version_page)),
        Route("/catalogue/pictures/{sha256}", console.view(picture)),
        Route("/catalogue/gifts", change(set_gift, Permission.CATALOGUE), methods=["POST"]),
        Route(
            "/catalogue/gifts/{sku}/retire", change(retire, Permission.CATALOGUE), methods=["POST"]
        ),
        Route("/catalogue/rules", change(set_rule, Permission.CATALOGUE), methods=["POST"]),
    ]


def update_routes(console: Console) -> list[BaseRoute]:

    def updates_page(page: Page) -> Response:
        return page.render(
            "updates.html",
            bundles=list_bundles(page.session),
            rollouts=rollouts.list_rollouts(page.session),
            policy=rollouts.RolloutPolicy(),
        )

    def rollout_page(page: Page) -> Response:
        view = rollouts.rollout_status(page.session, int(page.request.path_params["rollout_id"]))
        return page.render("rollout.html", r=view)

    def upload(page: Page) -> Response:
        file = _upload(page, "bundle")
        if file is None:
            raise InvalidInput("choose a bundle file to upload", code="no_file")
        config = console.config
        if not config.update_key:
            raise InvalidInput(
                "HQ has no update key to check bundles with (hq-update.pub in --tls-dir)",
                code="no_update_key",
            )
        data = file.file.read()
        info = add_bundle(
            page.session,
            config.bundles_path(),
            data,
            page.actor,
            page.now,
            load_update_key(Path(config.update_key)),
            name=Path(file.filename or "bundle").name,
        )
        return page.done(
            page.t("Bundle kept:") + f" {info.version} ({info.sha256[:12]})", "/updates"
        )

    def start(page: Page) -> Response:
        defaults = rollouts.RolloutPolicy()
        policy = rollouts.RolloutPolicy(
            max_failure_pct=_int(
                page.field("max_failure_pct"), "the failure threshold", optional=True
            )
            or defaults.max_failure_pct,
            min_attempts=_int(page.field("min_attempts"), "the attempts", optional=True)
            or defaults.min_attempts,
            in_flight=_int(page.field("in_flight"), "the kiosks at a time", optional=True)
            or defaults.in_flight,
        )
        view = rollouts.start_rollout(
            page.session,
            page.field("bundle"),
            rollouts.parse_ring(page.field("ring")),
            page.actor,
            page.now,
            policy,
        )
        return page.done(
            page.t("Rollout started:") + f" #{view.id} {view.version}", f"/updates/{view.id}"
        )

    def rollout_id(page: Page) -> int:
        return int(page.request.path_params["rollout_id"])

    def widen(page: Page) -> Response:
        view = rollouts.widen_rollout(
            page.session,
            rollout_id(page),
            rollouts.parse_ring(page.field("ring")),
            page.actor,
            page.now,
        )
        return page.done(
            page.t("Rollout widened:") + f" #{view.id} {view.ring}", f"/updates/{view.id}"
        )

    def halt(page: Page) -> Response:
        view = rollouts.halt_rollout(
            page.session, rollout_id(page), page.field("reason"), page.actor, page.now
        )
        return page.done(page.t("Rollout halted:") + f" #{view.id}", f"/updates/{view.id}")

    def resume(page: Page) -> Response:
        view = rollouts.resume_rollout(page.session, rollout_id(page), page.actor, page.now)
        return page.done(page.t("Rollout resumed:") + f" #{view.id}", f"/updates/{view.id}")

    def cancel(page: Page) -> Response:
        view = rollouts.cancel_rollout(page.session, rollout_id(page), page.actor, page.now)
        return page.done(page.t("Rollout cancelled:") + f" #{view.id}", f"/updates/{view.id}")

    async def serve_bundle(request: Request) -> Response:
        """A bundle for the devices (no sign-in: a device checks its signature itself)."""
        sha256 = str(request.path_params["sha256"])

        def find() -> Path | None:
            with console.tx() as session:
                return bundle_file(session, console.config.bundles_path(), sha256)

        path = await run_in_threadpool(find)
        if path is None:
            return Response("no such bundle\n", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type="application/octet-stream")

    change = console.change
    route = "/updates/{rollout_id:int}"
    return [
        Route("/updates", console.view(updates_page)),
        Route(route, console.view(rollout_page)),
        Route("/updates/bundles", change(upload, Permission.UPDATES), methods=["POST"]),
        Route("/updates/rollouts", change(start, Permission.UPDATES), methods=["POST"]),
        Route(route + "/widen", change(widen, Permission.UPDATES), methods=["POST"]),
        Route(route + "/halt", change(halt, Permission.UPDATES), methods=["POST"]),
        Route(route + "/resume", change(resume, Permission.UPDATES), methods=["POST"]),
        Route(route + "/cancel", change(cancel, Permission.UPDATES), methods=["POST"]),
        Route("/bundles/{sha256}.bundle", serve_bundle),
    ]
