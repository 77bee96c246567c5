"""Every seeded global setting (whk_05_configuracoes) is read by the code: each key names its reader
here, and the reader's code (comments left out) must read the key. A key nobody reads is a promise the
product does not keep (an operator changes it and nothing happens): remove it, or read it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
SEED: Final = ROOT / "sql/schema/161_whk_05_configuracoes_seed.sql"
# key -> the file whose code reads it
READERS: Final[dict[str, str]] = {
    "retry.policy": "sql/functions/delivery/effective_retry_policy.sql",
    "rate_limit.webhook_default": "sql/functions/delivery/claim_deliveries.sql",
    "rate_limit.api_per_minute": "sql/functions/api/api_rate_limit_hit.sql",
    "security.rotation_grace_hours": "api/security/controller.py",
    "security.max_old_keys": "api/security/controller.py",
    "delivery.breaker": "sql/functions/delivery/record_outcomes.sql",
    "delivery.auto_disable_after_s": "sql/functions/delivery/auto_disable_webhooks.sql",
    "delivery.response_body_max_bytes": "dispatcher/queries.sql",
    "monitoring.oldest_pending_warn_s": "api/monitoring/queries.sql",
    "dev.mock_keep_per_name": "sql/functions/api/mock_record.sql",
    "dev.mock_max_rows": "sql/functions/api/mock_record.sql",
    "dev.mock_retention_hours": "sql/functions/api/mock_record.sql",
    "retention.outbox_days": "sql/functions/ops/retention_horizon.sql",
    "retention.delivered_days": "sql/functions/ops/retention_horizon.sql",
    "retention.attempts_days": "sql/functions/ops/retention_horizon.sql",
    "retention.audit_days": "sql/functions/ops/retention_horizon.sql",
}


def seeded_keys(seed_sql: str) -> set[str]:
    """The keys of the seed's INSERT: the first string of each VALUES row."""
    return set(re.findall(r"^\s*\(\s*'([a-z_]+\.[a-z_.]+)'", seed_sql, flags=re.MULTILINE))


def _code(path: Path) -> str:
    """The file without its comments (a key named in a comment is not read)."""
    marker = "--" if path.suffix == ".sql" else "#"
    return "\n".join(line.split(marker, 1)[0] for line in path.read_text(encoding="utf-8").splitlines())


def _quoted(code: str) -> set[str]:
    return set(re.findall(r"'[^'\n]*'|\"[^\"\n]*\"", code))


def unread(seeded: set[str], readers: dict[str, str], root: Path) -> list[str]:
    """What is wrong: seeded keys without a reader, readers that do not read their key, stale entries."""
    problems = [f"{k}: seeded but no reader is named" for k in sorted(seeded - readers.keys())]
    problems += [f"{k}: has a reader but is not seeded" for k in sorted(readers.keys() - seeded)]
    for key in sorted(seeded & readers.keys()):
        path = root / readers[key]
        if not path.is_file() or not ({f"'{key}'", f'"{key}"'} & _quoted(_code(path))):
            problems.append(f"{key}: {readers[key]} does not read it")
    return problems


def test_every_seeded_setting_is_read() -> None:
    seeded = seeded_keys(SEED.read_text(encoding="utf-8"))
    assert len(seeded) == 16, seeded  # the parse found the rows
    assert unread(seeded, READERS, ROOT) == []


def test_the_check_fails_on_a_seeded_key_nothing_reads() -> None:
    seed = SEED.read_text(encoding="utf-8").replace(
        "INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES\n",
        "INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES\n"
        "    ('template.envelope', 'template', '{}', 'Never read.'),\n",
    )
    seeded = seeded_keys(seed)
    assert "template.envelope" in seeded
    assert unread(seeded, READERS, ROOT) == ["template.envelope: seeded but no reader is named"]
    # ...and naming a reader that does not read it (only a comment mentions it) fails too
    readers = {**READERS, "template.envelope": "sql/functions/delivery/record_outcomes.sql"}
    assert unread(seeded, readers, ROOT) == [
        "template.envelope: sql/functions/delivery/record_outcomes.sql does not read it"
    ]
    gone = {**READERS, "delivery.breaker": "sql/functions/delivery/next_wakeup.sql"}
    assert unread(seeded_keys(SEED.read_text(encoding="utf-8")), gone, ROOT) == [
        "delivery.breaker: sql/functions/delivery/next_wakeup.sql does not read it"
    ]
