"""`distrec prepare`: read a raw dataset (or generate a catalog) into the `data/` artifact.

    distrec prepare data=beauty
    distrec prepare data=ml1m_raw data.min_user_interactions=5
    distrec prepare data=synthetic data.synthetic.num_items=1000000
"""

from distrec.artifacts import read_json, wrote
from distrec.data.prepare import prepare


def run(cfg):
    out = prepare(cfg)
    s = read_json(out / "stats.json")
    wrote("prepare", f"{s['name']}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions "
          "(items/, sequences/, stats.json)", out)
    return out
