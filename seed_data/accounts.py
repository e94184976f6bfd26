"""The development logins, rendered as ``seed_data/logins.json``.

DEVELOPMENT ONLY: these passwords are public. The server must refuse to create them when it
runs in production mode (``FHIR_ENV=production``).

``python -m seed_data.accounts > seed_data/logins.json`` rewrites the file; a unit test
checks that the committed file equals :func:`logins_document`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from seed_data import identities
from seed_data.directory import CLINICIANS, PEOPLE
from seed_data.population import FIXTURE_TYPES, FIXTURES

NOTE = (
    "DEVELOPMENT ONLY. These logins and passwords are public test data for the synthetic seed "
    "population; the server refuses to create them in production mode. CAC and PIV logins are "
    "simulated by a choice on the login form (no card reader)."
)


@dataclass(frozen=True)
class Login:
    role: str
    username: str
    password: str
    login: str  # dslogon-basic | dslogon-premium | managed | cac | piv
    fhir_user: str
    acts_for: tuple[str, ...]
    name: str


def _patient(key: str) -> str:
    return f"Patient/{PEOPLE[key].id}"


def _practitioner(key: str) -> str:
    return f"Practitioner/{CLINICIANS[key].id}"


LOGINS: tuple[Login, ...] = (
    Login(
        "sponsor",
        "james.carter",
        "Dev-Only-Sponsor-1!",
        "dslogon-premium",
        _patient("james"),
        (_patient("sophia"), _patient("liam"), _patient("daniel")),
        "MSgt James Carter (active-duty sponsor)",
    ),
    Login(
        "spouse",
        "maria.carter",
        "Dev-Only-Spouse-1!",
        "dslogon-premium",
        _patient("maria"),
        (_patient("sophia"), _patient("liam")),
        "Maria Carter (spouse)",
    ),
    Login(
        "adult-dependent-no-grant",
        "emma.carter",
        "Dev-Only-Emma-1!",
        "dslogon-premium",
        _patient("emma"),
        (),
        "Emma Carter (20, no proxy grant)",
    ),
    Login(
        "adult-dependent-granted",
        "daniel.carter",
        "Dev-Only-Daniel-1!",
        "dslogon-premium",
        _patient("daniel"),
        (),
        "Daniel Carter (19, granted proxy access to his father)",
    ),
    Login(
        "basic-user",
        "robert.alvarez",
        "Dev-Only-Basic-1!",
        "dslogon-basic",
        _patient("robert"),
        (),
        "CDR (ret.) Robert Alvarez (retiree, DS Logon Basic)",
    ),
    Login(
        "managed-account",
        "eleanor.brooks",
        "Dev-Only-Managed-1!",
        "managed",
        _patient("eleanor"),
        (_patient("eleanor"),),
        "Eleanor Brooks's Managed account, operated by her daughter Susan Brooks-Reed",
    ),
    Login(
        "cac-user",
        "marcus.bell",
        "Dev-Only-Cac-1!",
        "cac",
        _patient("marcus"),
        (),
        "SSG Marcus Bell (active duty, CAC)",
    ),
    Login(
        "piv-user",
        "karen.liu",
        "Dev-Only-Piv-1!",
        "piv",
        _patient("karen"),
        (),
        "Karen Liu (DoD civilian, PIV)",
    ),
    Login(
        "veteran",
        "samuel.ortiz",
        "Dev-Only-Veteran-1!",
        "dslogon-premium",
        _patient("samuel"),
        (),
        "Samuel Ortiz (veteran, records from the VA)",
    ),
    Login(
        "practitioner",
        "dr.rachel.kim",
        "Dev-Only-Pcm-1!",
        "cac",
        _practitioner("rachel"),
        (),
        "Dr. Rachel Kim (PCM of the Carter family)",
    ),
    Login(
        "practitioner",
        "rn.jessica.moore",
        "Dev-Only-Nurse-1!",
        "cac",
        _practitioner("jessica"),
        (),
        "Jessica Moore, RN (Family Medicine nurse pool)",
    ),
)


# DS Logon accounts not yet linked to a Patient (no fhirUser): after signing in they verify
# their identity (docs/exchange.md, "Account linking (DEERS-style)"); `verify` holds the right answers and
# `links_to` the record they link to (seed_data/identities.py).
UNLINKED: tuple[dict[str, object], ...] = (
    {
        "role": "unlinked",
        "username": "ana.pena",
        "password": "Dev-Only-Unlinked-1!",
        "login": "dslogon-premium",
        "name": "Ana Lucía Peña Torres",
        "links_to": f"Patient/{identities.UNLINKED_ID}",
        "verify": {
            "ssn_last4": identities.ssn_of(identities.UNLINKED_EDIPI)[-4:],
            "edipi": identities.UNLINKED_EDIPI,
            "birthDate": "the Patient's birthDate (relative to the seeding day)",
        },
    },
)


def logins_document() -> dict[str, object]:
    return {
        "note": NOTE,
        "logins": [
            {
                "role": login.role,
                "username": login.username,
                "password": login.password,
                "login": login.login,
                "fhirUser": login.fhir_user,
                "acts_for": list(login.acts_for),
                "name": login.name,
            }
            for login in LOGINS
        ],
        "unlinked": [dict(u) for u in UNLINKED],
        "fixtures": dict(FIXTURES),
        "fixture_types": dict(FIXTURE_TYPES),
    }


def render() -> str:
    return json.dumps(logins_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
