"""Stock service: outlets, the per-outlet stock ledger, reservations and sales intake."""
