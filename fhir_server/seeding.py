"""Loading the deterministic seed population (seed_data/) into the store.

Every resource is written with update-as-create semantics on its fixed id, and an update
whose content equals the stored version makes no new version, so seeding twice changes
nothing. Ages are relative to the day of seeding (seed_data.population).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from fhir_server.context import ServerContext
from fhir_server.errors import FhirError

log = logging.getLogger("fhir_server.seed")


@dataclass
class SeedReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)


async def seed(ctx: ServerContext, today: date | None = None) -> SeedReport:
    if ctx.settings.production:
        raise RuntimeError("refusing to load development seed data in production mode")
    from seed_data.population import build_population

    report = SeedReport()
    for resource in build_population(today or date.today()):
        rt, rid = resource["resourceType"], resource["id"]
        try:
            ctx.validator.validate(resource)
            result = await ctx.store.update(rt, rid, resource)
        except FhirError as exc:
            report.failed.append(f"{rt}/{rid}: {exc.diagnostics}")
            continue
        if result.created:
            report.created += 1
        elif result.changed:
            report.updated += 1
        else:
            report.unchanged += 1
    if report.failed:
        log.error("seed: %d resources failed: %s", len(report.failed), report.failed[:5])
    return report


async def seed_if_empty(ctx: ServerContext) -> SeedReport | None:
    if not await ctx.store.is_empty():
        return None
    report = await seed(ctx)
    log.info("seeded the empty database: %s created, %s failed", report.created, len(report.failed))
    return report
