"""envoi.profiles: users (seed 002), their declared fields, subscriptions and erasure.

- `models`: tables; `schemas`: request and response bodies; `api`: the routers;
- `fields`: field declarations (the types live in `envoi.core.fieldtypes`);
- `services`: finding a profile by its identifiers, reading one back;
- `changes` (read and check one users item), `upsert` (single and bulk, batched),
  `writing` (apply checked changes), `batching` (chunked lookups);
- `erasure`: GDPR erasure, and its lifting by a later upsert.
"""
