"""mlp (and cnn's loss and activation) against plain torch modules, hand-computed losses and raw MNIST files."""
import math

import pytest
import torch
from torch import nn

import gfbench
from gfbench.classifier import ACTIVATIONS, RELU_FLOW_TOLERANCES
from gfbench.mnist import load_split
from zoo_support import requires_mnist

pytestmark = requires_mnist

TORCH_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
                     "linear": nn.Identity}


def _raw_examples(split, n, digits, stride=50):
    """Pixels/255 (n, 784) and remapped labels of the examples of ``digits``, picked by hand from the files."""
    images, labels = load_split(split)
    pool = [i for i in range(len(labels)) if labels[i] in digits]
    chosen = pool[::stride][:n]
    x = torch.tensor(images[chosen].reshape(n, 784) / 255.0, dtype=torch.float64)
    y = torch.tensor([digits.index(int(labels[i])) for i in chosen])
    return x, y, chosen


def _sequential(widths, activation, bias):
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out, bias=bias, dtype=torch.float64), TORCH_ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1])


def test_activation_tables_agree():
    assert set(ACTIVATIONS) == set(TORCH_ACTIVATIONS)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("activation, bias", [("tanh", True), ("gelu", False), ("softplus", True)])
def test_loss_is_a_plain_torch_forward_pass(mnist_env, loss, activation, bias):
    problem = gfbench.get_problem("mlp", hidden="16,8", activation=activation, loss=loss, bias=bias,
                                  classes="1,3,7", n_train=6)
    theta = problem.init(2)
    reference = _sequential([784, 16, 8, 3], activation, bias)
    nn.utils.vector_to_parameters(theta.clone(), reference.parameters())
    x, y, _ = _raw_examples("train", 6, [1, 3, 7])
    with torch.no_grad():
        outputs = reference((x - 0.1307) / 0.3081)
    if loss == "ce":
        expected = nn.CrossEntropyLoss()(outputs, y)
    else:
        expected = nn.MSELoss(reduction="sum")(outputs, nn.functional.one_hot(y, 3).double()) / (2 * 6)
    assert abs(float(problem.loss(theta)) - float(expected)) <= 1e-12


def test_mse_is_half_the_squared_distance_to_one_hot_averaged_over_examples(mnist_env):
    problem = gfbench.get_problem("mlp", hidden="", loss="mse", classes="4,9", n_train=2, normalize="none")
    theta = problem.init(0).numpy()
    weight, bias = theta[:2 * 784].reshape(2, 784), theta[2 * 784:]
    images, labels = load_split("train")
    first, second = [i for i in range(len(labels)) if labels[i] in (4, 9)][:51:50]
    total = 0.0
    for index in (first, second):
        outputs = weight @ (images[index].reshape(784) / 255.0) + bias
        target = [1.0, 0.0] if labels[index] == 4 else [0.0, 1.0]
        total += 0.5 * ((outputs[0] - target[0]) ** 2 + (outputs[1] - target[1]) ** 2)
    assert abs(float(problem.loss(problem.init(0))) - total / 2) <= 1e-13


def test_classes_select_those_digits_and_remap_the_labels(mnist_env):
    problem = gfbench.get_problem("mlp", classes="2,5,9", n_train=300, n_test=40, normalize="none")
    x, y, chosen = _raw_examples("train", 300, [2, 5, 9])
    _, labels = load_split("train")
    assert set(labels[chosen].tolist()) == {2, 5, 9}
    assert torch.equal(problem.train_y, y) and torch.equal(problem.train_x, x)
    assert problem.logits(problem.init(0), problem.train_x).shape == (300, 3)
    x_test, y_test, _ = _raw_examples("test", 40, [2, 5, 9], stride=1)
    assert torch.equal(problem.test_y, y_test) and torch.equal(problem.test_x, x_test)
    # more examples than every 50th of those digits holds: the first n of them
    many = gfbench.get_problem("mlp", classes="0,1", n_train=1000)
    assert torch.equal(many.train_y, _raw_examples("train", 1000, [0, 1], stride=1)[1])
    with pytest.raises(gfbench.ConfigError, match="examples of digits 0,1; asked for 20000"):
        gfbench.get_problem("mlp", classes="0,1", n_train=20_000)


def test_all_ten_digits_with_ec21_settings_are_linear_fc_and_relu_fc(mnist_env):
    for activation, preset in (("linear", "linear_fc"), ("relu", "relu_fc")):
        mlp = gfbench.get_problem("mlp", hidden="50,50", activation=activation, loss="ce", bias=False, init="xavier",
                                  n_train=30)
        ec21 = gfbench.get_problem(preset, n_train=30)
        assert torch.equal(mlp.init(5), ec21.init(5)) and torch.equal(mlp.train_x, ec21.train_x)
        assert float(mlp.loss(mlp.init(5))) == float(ec21.loss(ec21.init(5)))
    assert gfbench.get_problem("mlp", activation="relu", n_train=5).flow_tolerances == RELU_FLOW_TOLERANCES
    assert gfbench.get_problem("mlp", activation="tanh", n_train=5).flow_tolerances == {}


def test_init_torch_is_pytorchs_own_default_and_xavier_has_its_bound(mnist_env):
    problem = gfbench.get_problem("mlp", hidden="30,20", n_train=5, classes="0,1,2,3")
    torch.manual_seed(11)
    reference = _sequential([784, 30, 20, 4], "tanh", bias=True)  # nn.Linear draws its init on construction
    assert torch.equal(problem.init(11), nn.utils.parameters_to_vector(reference.parameters()))
    xavier = gfbench.get_problem("mlp", hidden="30,20", n_train=5, init="xavier")
    views = xavier.named_views(xavier.init(0))
    for name, (fan_in, fan_out) in {"0.weight": (784, 30), "2.weight": (30, 20), "4.weight": (20, 10)}.items():
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert 0.9 * bound < float(views[name].abs().max()) <= bound
    assert float(views["0.bias"].abs().max()) <= 1 / math.sqrt(784)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_has_the_finite_difference_gradient_and_trains(mnist_env, activation, loss):
    problem = gfbench.get_problem("mlp", hidden="6,5", activation=activation, loss=loss, classes="0,1,2,3",
                                  n_train=12, normalize="feature")
    generator = torch.Generator().manual_seed(3)
    theta = problem.init(1) + 0.1 * torch.randn(problem.dim, generator=generator, dtype=torch.float64)
    grad = gfbench.field.GradientField(problem).gradient(theta)
    for _ in range(3):
        direction = torch.randn(problem.dim, generator=generator, dtype=torch.float64)
        direction /= torch.linalg.vector_norm(direction)
        h = 1e-6
        central = (problem.loss(theta + h * direction) - problem.loss(theta - h * direction)) / (2 * h)
        assert abs(float(central - grad @ direction)) <= 1e-7 * max(1.0, float(torch.linalg.vector_norm(grad)))
    ds = gfbench.run(problem, "gd", lr=0.05, steps=30, record_every=30, progress=False)
    assert float(ds.loss[-1]) < float(ds.loss[0])


def test_accuracy_and_test_loss_follow_the_chosen_loss(mnist_env):
    problem = gfbench.get_problem("mlp", hidden="20", loss="mse", classes="0,1,2,3", n_train=60, n_test=50)
    ds = gfbench.run(problem, "gd", lr=0.05, steps=20, record_every=20, save_params=True, progress=False)
    theta = torch.from_numpy(ds.theta.values[-1].copy())
    reference = _sequential([784, 20, 4], "tanh", bias=True)
    nn.utils.vector_to_parameters(theta, reference.parameters())
    x, y, _ = _raw_examples("test", 50, [0, 1, 2, 3], stride=1)
    with torch.no_grad():
        outputs = reference((x - 0.1307) / 0.3081)
    expected = 0.5 * float(((outputs - nn.functional.one_hot(y, 4)) ** 2).sum()) / 50
    assert float(ds.test_loss[-1]) == pytest.approx(expected, rel=1e-13)
    assert float(ds.test_accuracy[-1]) == float((outputs.argmax(1) == y).double().mean()) > 0.5
    assert "1/2" in ds.test_loss.attrs["long_name"]


def test_feature_normalisation_uses_the_training_statistics(mnist_env):
    problem = gfbench.get_problem("mlp", normalize="feature", classes="0,1", n_train=100, n_test=30)
    pixels, _, _ = _raw_examples("train", 100, [0, 1])
    varying = pixels.std(0) > 0
    assert float(problem.train_x[:, varying].mean(0).abs().max()) <= 1e-12
    assert float((problem.train_x[:, varying].std(0, correction=0) - 1).abs().max()) <= 1e-12
    assert torch.equal(problem.train_x[:, ~varying], pixels[:, ~varying] - pixels[0, ~varying]) and (~varying).any()
    test_pixels = _raw_examples("test", 30, [0, 1], stride=1)[0]
    scale = pixels.std(0, correction=0)
    expected = (test_pixels - pixels.mean(0)) / torch.where(varying, scale, 1.0)
    assert torch.allclose(problem.test_x, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch, bias", [("subsample", False), ("lenet5", True)])
def test_cnn_takes_a_loss_and_an_activation(mnist_env, arch, bias):
    problem = gfbench.get_problem("cnn", arch=arch, loss="mse", activation="tanh", n_train=5)
    theta = problem.init(0)
    modules = list(problem.module.modules())
    assert any(isinstance(m, nn.Tanh) for m in modules) and not any(isinstance(m, nn.ReLU) for m in modules)
    outputs = problem.logits(theta, problem.train_x)
    relu = gfbench.get_problem("cnn", arch=arch, n_train=5)
    assert not torch.equal(outputs, relu.logits(theta, relu.train_x))
    expected = 0.5 * float(((outputs - nn.functional.one_hot(problem.train_y, 10)) ** 2).sum()) / 5
    assert float(problem.loss(theta)) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("params, named", [
    ({"classes": "0,0"}, "classes"), ({"classes": "11"}, "classes"), ({"classes": "3"}, "classes"),
    ({"classes": "3,1"}, "classes"), ({"classes": "0,a"}, "classes"), ({"classes": "-1,2"}, "classes"),
    ({"hidden": "0"}, "hidden"), ({"hidden": "20,,5"}, "hidden"), ({"activation": "foo"}, "activation"),
    ({"loss": "l2"}, "loss"), ({"init": "he"}, "init"), ({"normalize": "unit"}, "normalize"),
])
def test_bad_parameters_are_one_line_config_errors(mnist_env, params, named):
    with pytest.raises(gfbench.ConfigError, match=named) as error:
        gfbench.get_problem("mlp", n_train=5, **params)
    assert "\n" not in str(error.value)
    with pytest.raises(gfbench.ConfigError, match="activation"):
        gfbench.get_problem("cnn", activation="sigmoid", n_train=5)


@pytest.mark.parametrize("pool", [2, 7])
def test_pool_averages_pixel_blocks(mnist_env, pool):
    """pool=s: the inputs are the means of s x s pixel blocks, picked and averaged here with plain loops."""
    side = 28 // pool
    problem = gfbench.get_problem("mlp", hidden="5", classes="1,3,7", n_train=4, normalize="none", pool=pool)
    assert problem.dim == side * side * 5 + 5 + 5 * 3 + 3
    theta = problem.init(1)
    x, y, _ = _raw_examples("train", 4, [1, 3, 7])
    images = x.reshape(4, 28, 28)
    pooled = torch.tensor([[[float(images[i, r * pool:(r + 1) * pool, c * pool:(c + 1) * pool].sum()) / pool ** 2
                             for c in range(side)] for r in range(side)] for i in range(4)], dtype=torch.float64)
    reference = _sequential([side * side, 5, 3], "tanh", True)
    nn.utils.vector_to_parameters(theta.clone(), reference.parameters())
    with torch.no_grad():
        outputs = reference(pooled.reshape(4, -1))
    expected = ((outputs - nn.functional.one_hot(y, 3).double()) ** 2).sum() / (2 * 4)
    assert abs(float(problem.loss(theta)) - float(expected)) <= 1e-12
