"""Human feedback: the store of prompts, responses, labelling tasks and labels (SQLite or PostgreSQL).

- `models`:    SQLAlchemy 2 tables (schema managed by the Alembic migrations in `migrations/`)
- `db`:        engines per backend and `migrate` to the newest revision
- `records`:   what the store takes and returns (`Candidate`, `LabelIn`, `TaskView`, ...) and its errors
- `checks`:    validation of candidates and answers; grading of gold answers
- `store`:     `FeedbackStore`: labellers, the task queue, labels (one transaction each)
- `exchange`:  JSONL import of tasks; export of labels to `rlhf.data` preference files
- `dashboard`: admin figures, including `peer_agreement`

docs/labelling.md describes the whole, with the web app in `rlhf.web`.
"""
