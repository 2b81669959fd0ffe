"""Add an Alembic revision for what the models changed since the newest migration.

    .venv/bin/python scripts/new_migration.py "add spool table"

Released migrations are never edited: this upgrades a throw-away SQLite database to
head, autogenerates the difference into a new file, then formats it. Read the file
before committing it (autogenerate misses renames and data moves).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from envoi.db.session import MIGRATIONS_DIR, alembic_config, upgrade


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    versions = MIGRATIONS_DIR / "versions"
    before = set(versions.glob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'head.db'}"
        upgrade(url)
        command.revision(alembic_config(url), message=sys.argv[1], autogenerate=True)
    (created,) = set(versions.glob("*.py")) - before
    # Alembic renders JSONB's default astext_type without its module.
    created.write_text(created.read_text().replace("astext_type=Text()", "astext_type=sa.Text()"))
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "ruff", "check", "--fix", "-q", created], check=False)
    subprocess.run([bin_dir / "ruff", "format", "-q", created], check=True)
    print(f"wrote {created}")


if __name__ == "__main__":
    main()
