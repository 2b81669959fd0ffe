"""Regenerate migration 0001 from the models. Only while 0001 is unreleased (not on main)!

Once 0001 has landed it is never edited again: new changes get new revisions
(`alembic revision --autogenerate`, with `envoi.db.session.alembic_config`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from envoi.db.session import MIGRATIONS_DIR, alembic_config

versions = MIGRATIONS_DIR / "versions"
for old in versions.glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    config = alembic_config(f"sqlite:///{Path(tmp) / 'empty.db'}")
    command.revision(config, message="initial schema", autogenerate=True, rev_id="0001")
generated = next(versions.glob("0001_*.py"))
target = versions / "0001_initial.py"
# Alembic renders JSONB's default astext_type without its module.
text = generated.read_text().replace("astext_type=Text()", "astext_type=sa.Text()")
text = text.replace("Revises: \n", "Revises: (none)\n")
generated.unlink()
target.write_text(text)
bin_dir = Path(sys.executable).parent
subprocess.run([bin_dir / "ruff", "check", "--fix", "-q", target], check=False)
subprocess.run([bin_dir / "ruff", "format", "-q", target], check=True)
print(f"wrote {target}")
