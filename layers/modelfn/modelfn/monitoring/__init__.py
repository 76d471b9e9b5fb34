"""Drift monitoring: reference statistics stored with a version at publish (`baseline`), captured requests read
back for a time window (`captured`), a per-feature verdict against the baseline (`drift`), the scheduled Lambda
that runs it (`scheduled`) and the HTML report (`report`). numpy only: it ships in the layer."""
