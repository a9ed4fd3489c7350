"""`distrec prepare`: read a raw dataset (or generate a catalog) into the `data/` artifact.

    distrec prepare data=beauty
    distrec prepare data=ml1m_raw data.min_user_interactions=5
    distrec prepare data=synthetic data.synthetic.num_items=1000000
"""

from distrec.data.prepare import prepare


def run(cfg):
    return prepare(cfg)
