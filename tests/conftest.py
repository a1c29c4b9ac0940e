import pytest

from reusenet.engine import make_config


@pytest.fixture
def tiny_config(tmp_path):
    """A config for a seconds-long run: timm's 370k-parameter test_resnet on small synthetic images."""

    def build(**overrides):
        values = dict(model="test_resnet", data="synthetic",
                      data_args={"num_classes": 4, "image_size": 16, "num_samples": 64},
                      epochs=3, batch_size=16, lr=0.05, schedule="multistep", milestones=[1, 2], gamma=0.5,
                      precision="fp32", channels_last=False, workers=0, tensorboard=False, progress=False,
                      output=str(tmp_path / "run"))
        values.update(overrides)
        return make_config(values)

    return build
