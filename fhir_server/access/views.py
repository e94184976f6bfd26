"""Read-time views: steps that shape a resource on its way out, once the post-check
(screen.py) admitted it, on every path that returns resources (read, vread, search and its
includes, history, `$everything`, `$export`, an attachment's Binary).

A view is data computed at read time so it is right on the day it is read (a prescription's
refill eligibility) or a rule about what a token may see of an element (an SSN masked to its
last four digits). It changes the resource in place, as `members.redact` does, and never
decides whether the resource leaves: that stays with the policy and its query.

Views come from the portal workflows (portal/hooks.py, `Workflow.view`) and reach a request
on its policy (`AccessPolicy.views`, by resource type), so the paths need no list of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.access.policy import AccessPolicy

Doc = dict[str, Any]
# `stored` is the document the resource was read from (its `comp`, `ak` and any side field
# the store keeps beside `res`), or None where the path has none (an exported line).
View = Callable[["AccessPolicy", Doc, Mapping[str, Any] | None], None]


def apply(policy: AccessPolicy, resource: Doc, stored: Mapping[str, Any] | None) -> None:
    """Run the request's views for this resource's type, in their table order."""
    steps = policy.views.get(str(resource.get("resourceType")), ())
    for step in steps:
        step(policy, resource, stored)
