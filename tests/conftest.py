import pytest
import torch

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


@pytest.fixture
def check_timm_contract():
    """timm's model contract on an eval-mode model and a batch of 2 small inputs: forward = head(features),
    pre_logits width, reset_classifier, the small-input stem and the classifier named in pretrained_cfg."""

    def check(model, x):
        with torch.no_grad():
            features = model.forward_features(x)
            torch.testing.assert_close(model.forward_head(features), model(x))
            assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
            model.reset_classifier(7)
            assert model.forward_head(features).shape == (2, 7) and model.num_classes == 7
        cfg = model.pretrained_cfg
        assert model.get_submodule(cfg['first_conv']).stride == (1, 1)  # the small-input stem
        assert model.get_submodule(cfg['classifier']) is model.get_classifier()

    return check
