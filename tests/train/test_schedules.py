import math

import pytest

from distrec.train.schedules import lr_multiplier


def test_warmup_then_cosine_to_zero():
    f = lr_multiplier("cosine", 10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def test_inverse_sqrt_and_constant():
    f = lr_multiplier("inverse_sqrt", 4, 100)
    assert f(3) == pytest.approx(1.0) and f(15) == pytest.approx(math.sqrt(4 / 16))
    assert lr_multiplier("constant", 0, 10)(7) == 1.0
    with pytest.raises(ValueError, match="'linear' is not a valid Schedule"):
        lr_multiplier("linear", 0, 10)


def test_wsd_is_stable_then_decays_linearly_to_zero():
    f = lr_multiplier("wsd", 10, 110, decay_steps=20)
    assert f(0) == pytest.approx(0.1) and f(50) == 1.0 and f(90) == 1.0
    assert f(100) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="decay_steps=0"):
        lr_multiplier("wsd", 10, 110)
    with pytest.raises(ValueError, match="decay_steps=101"):
        lr_multiplier("wsd", 10, 110, decay_steps=101)
