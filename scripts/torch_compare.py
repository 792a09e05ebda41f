#!/usr/bin/env python3
"""The same network in PyTorch, from the same weights file and input as `convnet run`.

It is the independent framework check and the speed peer: it prints PyTorch's time per batch
(forward, and forward-backward of the loss where asked) and, given `convnet run`'s logits (and
gradients), the largest difference from them. With `--grads` the network runs as `convnet run
--grads` runs it: in training mode (batch norms by the batch's statistics), dropout off, the loss
the seed's l2_loss(logits) or, with `--labels`, softmax cross-entropy (GoogLeNet's auxiliary heads
added at 0.3).

    convnet init --model alexnet --seed 42 --out w.safetensors
    python3 -c "import numpy as np; np.save('x.npy', (np.random.randn(32, 3, 224, 224) * 0.1).astype('<f4'))"
    convnet run --model alexnet --weights w.safetensors --input x.npy --output y.npy --grads g.safetensors
    python3 scripts/torch_compare.py --model alexnet --weights w.safetensors --input x.npy \
        --logits y.npy --grads g.safetensors --pass both

    # torchvision's networks in training mode, cross-entropy against labels:
    python3 -c "import numpy as np; np.save('labels.npy', np.arange(8) % 10)"
    convnet run --model resnet18 --num-classes 10 --weights w.safetensors --input x.npy \
        --labels labels.npy --output y.npy --grads g.safetensors
    python3 scripts/torch_compare.py --model resnet18 --num-classes 10 --weights w.safetensors \
        --input x.npy --labels labels.npy --logits y.npy --grads g.safetensors --pass both

Models: `alexnet` (the seed's: TensorFlow's SAME padding and LRN, rebuilt here in PyTorch) and
torchvision's `vgg11/13/16/19`, `resnet18/34/50/101/152`, `googlenet`. On CUDA it runs fp32 with
TF32 off and cuDNN's benchmark mode on. Needs torch, torchvision (for its models), numpy and
safetensors: `pip install torch torchvision numpy safetensors`.

Style transfer (`convnet style`, docs/style.md) has its own mode, `style`: PyTorch's loop of the
same objective (content, Gram-matrix style and total-variation terms on torchvision's VGG
features) and Adam, from the same weights and images; it compares the step-0 loss terms and image
gradient, and the loss after the steps, with `convnet style --json --gradient-out`:

    python3 scripts/torch_compare.py style --make-weights f.safetensors --make-images DIR --size 64
    convnet style --weights f.safetensors --content DIR/content.npy --style DIR/style.npy \
        --init DIR/init.npy --steps 50 --gradient-out g.npy --out o.npy --json > run.json
    python3 scripts/torch_compare.py style --weights f.safetensors --content DIR/content.npy \
        --style DIR/style.npy --init DIR/init.npy --steps 50 --gradient g.npy --run run.json
"""

import argparse
import copy
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def same_padding(size, kernel, stride):
    """TensorFlow's SAME: (before, after), the larger half after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeedAlexNet(torch.nn.Module):
    """The seed's single-tower AlexNet with TensorFlow's semantics: SAME convolutions (asymmetric
    padding), tf.nn.lrn(depth_radius=5, bias=1, alpha=0.001/9, beta=0.75), VALID 3x3/2 pools."""

    CONVS = [("conv1", 3, 96, 11, 4), ("conv2", 96, 256, 5, 1), ("conv3", 256, 384, 3, 1),
             ("conv4", 384, 384, 3, 1), ("conv5", 384, 256, 3, 1)]

    def __init__(self, num_classes, input_size):
        super().__init__()
        for name, cin, cout, k, s in self.CONVS:
            setattr(self, name, torch.nn.Conv2d(cin, cout, k, s))
        side = input_size
        for name, _, _, _, stride in self.CONVS:
            side = math.ceil(side / stride)
            if name in ("conv1", "conv2", "conv5"):
                side = (side - 3) // 2 + 1
        self.fc1 = torch.nn.Linear(256 * side * side, 4096)
        self.fc2 = torch.nn.Linear(4096, 4096)
        self.fc3 = torch.nn.Linear(4096, num_classes)
        # torch's LRN divides alpha by the window; TensorFlow's does not.
        self.lrn = torch.nn.LocalResponseNorm(11, alpha=0.001 / 9 * 11, beta=0.75, k=1.0)

    def conv(self, name, x):
        layer = getattr(self, name)
        k, s = layer.kernel_size[0], layer.stride[0]
        top, bottom = same_padding(x.shape[2], k, s)
        left, right = same_padding(x.shape[3], k, s)
        return F.relu(layer(F.pad(x, (left, right, top, bottom))))

    def forward(self, x):
        pool = lambda t: F.max_pool2d(t, 3, 2)
        x = pool(self.lrn(self.conv("conv1", x)))
        x = pool(self.lrn(self.conv("conv2", x)))
        x = self.conv("conv5", self.conv("conv4", self.conv("conv3", x)))
        x = torch.flatten(pool(x), 1)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc3(x)


def build(name, num_classes, input_size, aux_logits):
    if name == "alexnet":
        return SeedAlexNet(num_classes, input_size)
    import torchvision
    if name == "googlenet":
        return torchvision.models.googlenet(num_classes=num_classes, aux_logits=aux_logits,
                                            transform_input=False, init_weights=False)
    if name.startswith(("vgg", "resnet")):
        return getattr(torchvision.models, name)(num_classes=num_classes)
    sys.exit(f"error: unknown model '{name}' (alexnet, vgg11/13/16/19, resnet18/34/50/101/152, googlenet)")


def load(model, path):
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"error: {path}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def difference(name, ours, theirs):
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        sys.exit(f"error: {name}: shape {ours.shape} here, {theirs.shape} from convnet")
    biggest = np.abs(ours).max()
    diff = np.abs(ours - theirs).max()
    print(f"{name:<14} max |torch - convnet| {diff:.3e}, max |torch| {biggest:.3e}, "
          f"relative {diff / biggest if biggest else diff:.3e}")
    return diff / biggest if biggest else diff


def without_dropout(model):
    """Dropout off (convnet has none, as the seed's network has none), training mode otherwise."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train()


def training_loss(model, x, labels):
    """The loss convnet differentiates: l2_loss(logits), or mean cross-entropy against labels;
    GoogLeNet's auxiliary heads (in training mode it returns them) add 0.3 x theirs."""
    out = model(x)
    heads = [(out, 1.0)]
    if isinstance(out, tuple):  # torchvision GoogLeNet: (logits, aux_logits2, aux_logits1)
        heads = [(out[0], 1.0)] + [(aux, 0.3) for aux in out[1:] if aux is not None]
    total = 0.0
    for logits, weight in heads:
        if labels is None:
            total = total + weight * logits.square().sum() / 2
        else:
            total = total + weight * F.cross_entropy(logits, labels)
    return heads[0][0], total


def timed(step, device, batches, burn_in):
    times = []
    for i in range(burn_in + batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= burn_in:
            times.append(time.perf_counter() - start)
    return statistics.fmean(times), statistics.pstdev(times)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def conv_names(features):
    """Gatys et al.'s name of each convolution of torchvision's VGG `features` -> its index."""
    names, block, conv = {}, 1, 0
    for i, module in enumerate(features):
        if isinstance(module, torch.nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = i
        elif isinstance(module, torch.nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


def vgg_features(model):
    import torchvision
    features = getattr(torchvision.models, model)().features
    for module in features:
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return features


def feature_maps(features, x, wanted, pool):
    """The outputs after the ReLU of each wanted convolution (by index), as convnet fuses them."""
    out, deepest = {}, max(wanted)
    for i, module in enumerate(features[: deepest + 2]):
        if isinstance(module, torch.nn.MaxPool2d) and pool == "avg":
            x = F.adaptive_avg_pool2d(x, (x.shape[2] // 2, x.shape[3] // 2))
        else:
            x = module(x)
        if i - 1 in wanted and isinstance(module, torch.nn.ReLU):
            out[i - 1] = x
    return out


def gram(f):
    c = f.shape[1]
    flat = f.reshape(c, -1)
    return flat @ flat.t() / flat.numel()


def style_objective(features, x, content_targets, style_targets, args):
    """The three weighted terms of docs/style.md at image x ([1, 3, H, W] in [0, 1])."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    maps = feature_maps(features, (x - mean) / std, set(content_targets) | set(style_targets),
                        args.pool)
    content = sum(F.mse_loss(maps[i], t) for i, t in content_targets.items()) * args.content_weight
    style = sum(F.mse_loss(gram(maps[i]), t) for i, t in style_targets.items()) * args.style_weight
    tv = ((x[:, :, 1:, :] - x[:, :, :-1, :]).square().sum()
          + (x[:, :, :, 1:] - x[:, :, :, :-1]).square().sum()) * args.tv_weight
    return content, style, tv


def style_main(argv):
    p = argparse.ArgumentParser(prog="torch_compare.py style",
                                description="convnet style's objective and Adam in PyTorch")
    p.add_argument("--model", default="vgg19")
    p.add_argument("--weights", help="safetensors of torchvision's VGG (features.* suffice)")
    p.add_argument("--make-weights", help="write torchvision-initialised features here and stop")
    p.add_argument("--make-images", help="write content/style/init .npy images here and stop")
    p.add_argument("--size", type=int, default=64, help="with --make-images: the content's side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--content")
    p.add_argument("--style")
    p.add_argument("--init", help="the initial image (.npy); default the content image")
    p.add_argument("--content-layers", default="conv4_2")
    p.add_argument("--style-layers", default="conv1_1,conv2_1,conv3_1,conv4_1,conv5_1")
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=1e6)
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--pool", choices=["max", "avg"], default="max")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam")
    p.add_argument("--lr", type=float, help="default 0.02 for Adam, 1 for L-BFGS")
    p.add_argument("--history", type=int, default=100, help="L-BFGS's history_size")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--gradient", help="convnet style --gradient-out's .npy, to compare")
    p.add_argument("--run", help="convnet style --json's output, to compare")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.make_weights:
        from safetensors.torch import save_file
        state = {f"features.{k}": v.contiguous() for k, v in vgg_features(args.model).state_dict().items()}
        save_file(state, args.make_weights)
        return print(f"wrote {args.make_weights}")
    if args.make_images:
        import os
        os.makedirs(args.make_images, exist_ok=True)
        rng = np.random.default_rng(args.seed)
        side = args.size
        smooth = lambda h, w: np.clip(0.5 + 0.3 * np.sin(np.arange(w)[None, None] * rng.uniform(0.1, 0.5, (3, 1, 1))
                                       + np.arange(h)[None, :, None] * rng.uniform(0.1, 0.5, (3, 1, 1)))
                                      + 0.1 * rng.standard_normal((3, h, w)), 0, 1).astype("<f4")
        np.save(f"{args.make_images}/content.npy", smooth(side * 3 // 4, side))
        np.save(f"{args.make_images}/style.npy", smooth(side, side))
        np.save(f"{args.make_images}/init.npy", rng.uniform(0, 1, (3, side * 3 // 4, side)).astype("<f4"))
        return print(f"wrote content.npy, style.npy and init.npy into {args.make_images}")
    if not (args.weights and args.content and args.style):
        sys.exit("error: style needs --weights, --content and --style")
    features = vgg_features(args.model)
    state = {k[len("features."):]: v for k, v in load_file(args.weights).items() if k.startswith("features.")}
    names = conv_names(features)
    pick = lambda text: [names[n] for n in text.split(",") if n]
    content_layers, style_layers = pick(args.content_layers), pick(args.style_layers)
    deepest = max(content_layers + style_layers)
    missing = [k for k in features.state_dict() if int(k.split(".")[0]) <= deepest and k not in state]
    if missing:
        sys.exit(f"error: {args.weights}: missing features.{missing[0]}")
    features.load_state_dict({k: v for k, v in features.state_dict().items()} | state, strict=False)
    image = lambda path: torch.from_numpy(np.load(path)).reshape(1, 3, *np.load(path).shape[-2:])
    content, style_img = image(args.content), image(args.style)
    init = image(args.init) if args.init else content.clone()

    def targets(dtype):
        f = copy.deepcopy(features).to(dtype).eval()
        with torch.no_grad():
            mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)
            c = feature_maps(f, (content.to(dtype) - mean) / std, set(content_layers), args.pool)
            s = feature_maps(f, (style_img.to(dtype) - mean) / std, set(style_layers), args.pool)
        return f, {i: c[i] for i in content_layers}, {i: gram(s[i]) for i in style_layers}

    def step0(dtype):
        f, ct, st = targets(dtype)
        x = init.to(dtype).clone().requires_grad_(True)
        terms = style_objective(f, x, ct, st, args)
        sum(terms).backward()
        return [t.item() for t in terms], x.grad[0].double().numpy()

    (terms32, grad32), (terms64, grad64) = step0(torch.float32), step0(torch.float64)
    print(f"step 0, float64: content {terms64[0]:.6e}, style {terms64[1]:.6e}, tv {terms64[2]:.6e}")
    relative = lambda a, b: abs(a - b) / abs(b) if b else abs(a)
    print("PyTorch f32 against its f64: terms " + ", ".join(f"{relative(a, b):.2e}" for a, b in zip(terms32, terms64))
          + f"; image gradient {np.abs(grad32 - grad64).max() / np.abs(grad64).max():.2e}")
    run = None
    if args.run:
        import json
        run = json.load(open(args.run))
        first = run["steps"][0]
        ours = [first["content"], first["style"], first["tv"]]
        print("convnet against PyTorch f64: terms " + ", ".join(f"{relative(a, b):.2e}" for a, b in zip(ours, terms64)))
    if args.gradient:
        ours = np.load(args.gradient).astype(np.float64)
        print(f"convnet image gradient against PyTorch f64: {np.abs(ours - grad64).max() / np.abs(grad64).max():.2e}")

    f, ct, st = targets(torch.float32)
    x = init.clone().requires_grad_(True)
    totals, start = [], time.perf_counter()
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam([x], lr=args.lr or 0.02)
        for _ in range(args.steps):
            optimizer.zero_grad()
            loss = sum(style_objective(f, x, ct, st, args))
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            totals.append(loss.item())
    else:
        # As PyTorch's neural-transfer tutorial: the image clamped before each evaluation, one
        # step = one evaluation (an iteration of LBFGS without line search).
        optimizer = torch.optim.LBFGS([x], lr=args.lr or 1.0, history_size=args.history,
                                      max_iter=20)

        def closure():
            with torch.no_grad():
                x.clamp_(0, 1)
            optimizer.zero_grad()
            loss = sum(style_objective(f, x, ct, st, args))
            loss.backward()
            totals.append(loss.item())
            return loss
        while len(totals) < args.steps:
            optimizer.step(closure)
        totals = totals[: args.steps]
    seconds = (time.perf_counter() - start) / max(args.steps, 1)
    print(f"PyTorch CPU ({torch.get_num_threads()} threads): {seconds:.3f} s/step over {args.steps} "
          f"{args.optimizer} steps; "
          f"loss {totals[0]:.6e} -> {totals[-1]:.6e}" if totals else "no steps")
    if run and totals and len(run["steps"]) >= len(totals):
        ours = run["steps"][len(totals) - 1]["total"]
        print(f"convnet's loss at step {len(totals) - 1}: {ours:.6e}, relative to PyTorch's "
              f"{relative(ours, totals[-1]):.2e}; convnet {run['seconds_per_step']:.3f} s/step")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="alexnet")
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True, help=".npy [N, 3, S, S] f32")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--aux-logits", action="store_true")
    p.add_argument("--logits", help="convnet run's --output, to compare with")
    p.add_argument("--grads", help="convnet run's --grads, to compare with (training mode)")
    p.add_argument("--labels", help=".npy [N] int64/int32: cross-entropy instead of l2_loss")
    p.add_argument("--f64", action="store_true",
                   help="with --grads: also run the network in float64 and report, per gradient, "
                        "convnet's and PyTorch's own f32 distance from it, and their ratio")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pass", dest="passes", choices=["forward", "forward-backward", "both"],
                   default="forward")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--burn-in", type=int, default=2)
    args = p.parse_args()

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    x = torch.from_numpy(np.load(args.input)).to(device)
    model = build(args.model, args.num_classes, x.shape[-1], args.aux_logits)
    load(model, args.weights)
    model = model.to(device).eval()
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(f"torch {torch.__version__} on {device}" + (f" ({threads} threads)" if threads else "")
          + f"; {args.model}, input {list(x.shape)}, fp32, TF32 off")

    labels = None
    if args.labels:
        labels = torch.from_numpy(np.load(args.labels).astype(np.int64)).to(device)
    failed = False
    if args.grads:
        # As `convnet run --grads`: training mode, the logits of that pass, then the gradients.
        without_dropout(model)
        model.zero_grad()
        logits, loss = training_loss(model, x, labels)
        loss.backward()
        print(f"loss {loss.item():.6e}")
        if args.logits:
            failed |= difference("logits", logits.detach().cpu().numpy(), np.load(args.logits)) > 1e-4
        theirs = load_file(args.grads)
        worst = (0.0, "")
        for name, param in model.named_parameters():
            if name in theirs and param.grad is not None:
                relative = difference(name, param.grad.cpu().numpy(), theirs[name].numpy())
                worst = max(worst, (relative, name))
                failed |= relative > 1e-3
        print(f"largest relative gradient difference: {worst[0]:.3e} ({worst[1]})")
        if args.f64:
            f32_grads = {n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters()
                         if p.grad is not None}
            exact = copy.deepcopy(model).double()
            exact.zero_grad()
            training_loss(exact, x.double(), labels)[1].backward()
            print("against float64 PyTorch (max |error| / max |f64|): convnet, PyTorch f32, ratio")
            ratios = []
            for name, param in exact.named_parameters():
                if name not in theirs or param.grad is None:
                    continue
                reference = param.grad.cpu().numpy()
                scale = np.abs(reference).max() or 1.0
                ours = np.abs(theirs[name].numpy().astype(np.float64) - reference).max() / scale
                torch32 = np.abs(f32_grads[name].astype(np.float64) - reference).max() / scale
                ratio = ours / torch32 if torch32 > 0 else float("inf") if ours > 0 else 1.0
                ratios.append((ratio, name, ours, torch32))
                print(f"{name:<40} {ours:.3e} {torch32:.3e} {ratio:.2f}")
            worst_ratio = max(ratios)
            print(f"largest ratio to PyTorch's own f32 error: {worst_ratio[0]:.2f} ({worst_ratio[1]}: "
                  f"{worst_ratio[2]:.3e} vs {worst_ratio[3]:.3e})")
        model.eval()
    elif args.logits:
        with torch.no_grad():
            logits = model(x).cpu().numpy()
        failed |= difference("logits", logits, np.load(args.logits)) > 1e-4

    batch = x.shape[0]
    passes = ["forward", "forward-backward"] if args.passes == "both" else [args.passes]
    for which in passes:
        if which == "forward":
            model.eval()

            def step():
                with torch.no_grad():
                    model(x)
        else:
            without_dropout(model)

            def step():
                model.zero_grad(set_to_none=True)
                training_loss(model, x, labels)[1].backward()
        mean, sd = timed(step, device, args.batches, args.burn_in)
        name = "Forward" if which == "forward" else "Forward_backward"
        print(f"{name} across {args.batches} steps, {mean:.3f} +/- {sd:.3f} sec / batch "
              f"({batch / mean:.1f} images/s)")
    sys.exit(1 if failed else 0)


def schedule_rate(schedule, base, epoch, epochs):
    """convnet's learning rate of `epoch` (src/training/mod.rs, Schedule::rate), in f32 as it
    computes it."""
    base32 = np.float32(base)
    if schedule == "constant":
        return float(base32)
    if schedule == "cosine":
        return float(np.float32(float(base32) * (1 + math.cos(math.pi * epoch / max(epochs, 1))) / 2))
    _, every, gamma = schedule.split(":")
    return float(base32 * np.float32(gamma) ** (epoch // int(every)))


def curves_svg(path, title, series):
    """Loss per step, one polyline per (name, values): the parity figure of docs/training.md."""
    width, height, left, top = 720, 300, 70, 30
    values = [v for _, vs in series for v in vs]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    steps = max(len(vs) for _, vs in series)
    colours = ["#4a7ebb", "#d0702a", "#3a9a4a"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" '
           'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="4" y="18" font-size="14" font-weight="bold">{title}</text>',
           f'<rect x="{left}" y="{top}" width="{width - left - 150}" height="{height}" fill="none" stroke="#888"/>',
           f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{hi:.4g}</text>',
           f'<text x="{left - 4}" y="{top + height}" text-anchor="end">{lo:.4g}</text>',
           f'<text x="{(width - 150 + left) / 2}" y="{top + height + 16}" text-anchor="middle">step (0 to {steps - 1})</text>']
    for k, (name, vs) in enumerate(series):
        xs = [left + i / max(steps - 1, 1) * (width - left - 150) for i in range(len(vs))]
        ys = [top + height - (v - lo) / (hi - lo) * height for v in vs]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        dash = ' stroke-dasharray="6 4"' if k else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colours[k % 3]}" stroke-width="1.5"{dash}/>')
        out.append(f'<text x="{width - 140}" y="{top + 14 + 16 * k}" fill="{colours[k % 3]}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def train_main(argv):
    """`train`: replays `convnet train --epochs ... --order-out O --json` in PyTorch -- the same
    weights, data, sample order, SGD (momentum, weight decay) and schedule -- and compares the
    loss of every step, and the weights after the last."""
    p = argparse.ArgumentParser(prog="torch_compare.py train", description=train_main.__doc__)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--aux-logits", action="store_true")
    p.add_argument("--weights", required=True, help="the run's initial weights")
    p.add_argument("--make-weights", action="store_true",
                   help="write PyTorch's default initialisation of the model (torchvision's for its "
                        "networks) to --weights and stop: logits of order 1, where the seed's "
                        "AlexNet initialisation gives cross-entropy losses of order 1e4")
    p.add_argument("--input-size", type=int, default=224, help="with --make-weights")
    p.add_argument("--seed", type=int, default=0, help="with --make-weights")
    p.add_argument("--input")
    p.add_argument("--labels")
    p.add_argument("--order", help="convnet train --order-out")
    p.add_argument("--run", help="convnet train --json's output")
    p.add_argument("--final", help="convnet train --out: compared after the run's last step")
    p.add_argument("--f64", action="store_true",
                   help="also train in float64; report convnet's and PyTorch f32's distance from it")
    p.add_argument("--svg", help="draw both loss curves here")
    args = p.parse_args(argv)
    if args.make_weights:
        from safetensors.torch import save_file
        torch.manual_seed(args.seed)
        model = build(args.model, args.num_classes, args.input_size, args.aux_logits)
        state = {k: v.contiguous() for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        save_file(state, args.weights)
        print(f"wrote {args.weights}")
        return
    if not (args.input and args.labels and args.order and args.run):
        sys.exit("error: train needs --input, --labels, --order and --run (or --make-weights)")

    with open(args.run) as f:
        run = json.load(f)
    settings = run["settings"]
    ours = [s["loss"] for s in run["steps"]]
    x_all = torch.from_numpy(np.load(args.input))
    if x_all.dtype != torch.float32:
        sys.exit("error: train replays float32 images; 8-bit ones are normalised by convnet on "
                 "the GPU, which this replay does not do")
    y_all = torch.from_numpy(np.load(args.labels).astype(np.int64))
    order = np.load(args.order)
    batch = settings["batch"]
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); {args.model}, "
          f"{len(ours)} steps of batch {batch}, lr {settings['learning_rate']} "
          f"({settings['schedule']}), momentum {settings['momentum']}, "
          f"weight decay {settings['weight_decay']}")

    def replay(dtype):
        model = build(args.model, args.num_classes, x_all.shape[-1], args.aux_logits)
        load(model, args.weights)
        model = without_dropout(model.to(dtype))
        opt = torch.optim.SGD(model.parameters(), lr=settings["learning_rate"],
                              momentum=settings["momentum"],
                              weight_decay=settings["weight_decay"])
        losses = []
        for epoch, row in enumerate(order):
            for group in opt.param_groups:
                group["lr"] = schedule_rate(settings["schedule"], settings["learning_rate"],
                                            epoch, settings["epochs"])
            for start in range(0, len(row), batch):
                index = torch.from_numpy(row[start:start + batch].astype(np.int64))
                if len(index) < batch and settings["drop_last"]:
                    continue
                if len(losses) == len(ours):
                    break
                opt.zero_grad(set_to_none=True)
                _, loss = training_loss(model, x_all[index].to(dtype), y_all[index])
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return model, losses

    model, theirs = replay(torch.float32)
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    relative = np.abs(ours_a - theirs_a) / np.abs(theirs_a)
    print(f"per-step loss, max |convnet - torch| / |torch|: {relative.max():.3e} "
          f"(step {relative.argmax()}); first 50 steps {relative[:50].max():.3e}")
    print("step  convnet        torch          relative")
    for i in sorted(set([0, 1, 2, 5, 10, 20, 49, len(ours) - 1]) & set(range(len(ours)))):
        print(f"{i:>4}  {ours[i]:.7e}  {theirs[i]:.7e}  {relative[i]:.2e}")
    series = [("convnet-wgpu", ours), ("PyTorch f32", theirs)]
    exact_model = None
    if args.f64:
        exact_model, exact = replay(torch.float64)
        exact_a = np.array(exact)
        ours_err = np.abs(ours_a - exact_a) / np.abs(exact_a)
        torch_err = np.abs(theirs_a - exact_a) / np.abs(exact_a)
        print(f"against PyTorch float64, max per-step relative error: convnet {ours_err.max():.3e}, "
              f"PyTorch f32 {torch_err.max():.3e}; first 50 steps {ours_err[:50].max():.3e} and "
              f"{torch_err[:50].max():.3e}")
        print("step  convnet-f64  torch32-f64")
        for i in sorted(set([0, 1, 2, 3, 5, 10, 20, 49, len(ours) - 1]) & set(range(len(ours)))):
            print(f"{i:>4}  {ours_err[i]:.2e}     {torch_err[i]:.2e}")
    if args.final:
        final = load_file(args.final)
        f32_state = model.state_dict()
        references = [("PyTorch f32", f32_state)]
        if exact_model is not None:
            references.append(("PyTorch f64", exact_model.state_dict()))
        for label, state in references:
            rows = []
            for name, value in state.items():
                if name.endswith("num_batches_tracked") or name not in final:
                    continue
                ref = value.detach().double().numpy()
                scale = np.abs(ref).max() or 1.0
                ours_diff = np.abs(final[name].double().numpy() - ref).max() / scale
                torch_diff = np.abs(f32_state[name].double().numpy() - ref).max() / scale
                rows.append((ours_diff, name, torch_diff))
            rows.sort(reverse=True)
            print(f"weights after step {len(ours) - 1} against {label}, max|diff| / max|ref|, "
                  f"largest: convnet {rows[0][0]:.3e} ({rows[0][1]})")
            if label == "PyTorch f64":
                worst_torch = max((r[2], r[1]) for r in rows)
                print(f"  PyTorch f32's own largest: {worst_torch[0]:.3e} ({worst_torch[1]}); "
                      "the five largest of convnet's, with PyTorch f32's beside:")
                for ours_diff, name, torch_diff in rows[:5]:
                    print(f"  {name:<32} {ours_diff:.3e}  {torch_diff:.3e}")
    if args.svg:
        curves_svg(args.svg, f"{args.model}: training loss per step, convnet-wgpu and PyTorch",
                   series)
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["style"]:
        style_main(sys.argv[2:])
    elif sys.argv[1:2] == ["train"]:
        train_main(sys.argv[2:])
    else:
        main()
