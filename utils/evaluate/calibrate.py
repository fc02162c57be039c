"""Temperature scaling (--calibrate=temperature): one number T, fitted after training on the validation split, that
divides the network's logits so that its probabilities match how often it is right; the argmax, so the accuracy,
does not change. Stored in the checkpoint (`temperature`, and `calibration`: what it changed) and applied wherever
the checkpoint is loaded for evaluation, and so inside exported graphs."""
import numpy as np
import torch
import torch.nn.functional as F

from utils.evaluate.metrics import calibration


def fit_temperature(probs, targets):
    """The T > 0 that minimises the negative log-likelihood of softmax(log(probs) / T): the one-parameter fit of
    Guo et al. (2017) by L-BFGS on log T. log(probs) differs from the logits by a constant per row, which the
    softmax ignores, so probabilities are all it needs."""
    logp = torch.from_numpy(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)))
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logp / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def scaled(probs, temperature):
    """softmax(log(probs) / temperature), row by row."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) / temperature
    e = np.exp(logp - logp.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit(probs, targets):
    """(temperature, record): T fitted on (probs, targets) and the calibration it gives, before and after."""
    t = fit_temperature(probs, targets)
    before, after = calibration(probs, targets), calibration(scaled(probs, t), targets)
    record = dict(temperature=t, images=int(len(targets)),
                  **{f'{k}_{when}': cal[k] for k in ('ece', 'nll', 'brier') for when, cal in
                     (('before', before), ('after', after))})
    return t, record


def apply(model, temperature):
    """Divide the logits of `model` by `temperature` from now on (a forward hook, which the exporters record too);
    nothing for None or 1."""
    if temperature and temperature != 1.0:
        model.register_forward_hook(lambda module, inputs, output: output / temperature)
    return model
