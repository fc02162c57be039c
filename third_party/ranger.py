"""Ranger: RAdam + Lookahead + gradient centralisation in one optimizer.

Written from the papers:
- RAdam: Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and Beyond".
- Lookahead: Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back".
- Gradient centralisation: Yong et al. 2020, "Gradient Centralization".

Everything the optimizer remembers (moments, slow weights, step counters) lives in
``self.state`` so ``state_dict()`` / ``load_state_dict()`` resume a run exactly.
"""
import math

import torch

# RAdam falls back to un-adapted momentum SGD while the variance of the adaptive
# learning rate is intractable (length of the approximated SMA below this).
SMA_THRESHOLD = 5


class Ranger(torch.optim.Optimizer):
    """RAdam steps on fast weights, pulled towards slow weights every ``k`` steps.

    Args:
        params: parameters or param groups (each group may override any option).
        lr: learning rate.
        alpha: Lookahead slow-weight step size (0 < alpha <= 1).
        k: Lookahead synchronisation period in steps.
        betas: Adam coefficients for the first and second moments.
        eps: added to the denominator for numerical stability.
        weight_decay: decoupled weight decay (as in the RAdam reference code).
        use_gc: centralise gradients of weights with more than one dimension.
    """

    def __init__(self, params, lr=1e-3, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5,
                 weight_decay=0, use_gc=True):
        if not lr > 0:
            raise ValueError(f"Ranger lr must be > 0, got {lr}")
        if not 0 < alpha <= 1:
            raise ValueError(f"Ranger alpha must be in (0, 1], got {alpha}")
        if int(k) != k or k < 1:
            raise ValueError(f"Ranger k must be an integer >= 1, got {k}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Ranger betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"Ranger eps must be > 0, got {eps}")
        if weight_decay < 0:
            raise ValueError(f"Ranger weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, alpha=alpha, k=int(k), betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, use_gc=use_gc)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("Ranger does not support sparse gradients; use a dense layer")
                self._update(p, group)
        return loss

    def _update(self, p, group):
        """One RAdam step on ``p`` followed by the Lookahead sync when due."""
        grad = p.grad.float()
        if group['use_gc'] and grad.dim() > 1:
            grad = centralize_gradient(grad)

        state = self.state[p]
        if not state:
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(p, dtype=torch.float32)
            state['exp_avg_sq'] = torch.zeros_like(p, dtype=torch.float32)
            state['slow_buffer'] = p.detach().clone()
        state['step'] += 1
        step = state['step']
        beta1, beta2 = group['betas']
        exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        weights = p.float()
        if group['weight_decay'] != 0:
            weights.mul_(1 - group['lr'] * group['weight_decay'])
        step_size, rectified = radam_step_size(step, beta1, beta2)
        if rectified:
            denom = exp_avg_sq.sqrt().add_(group['eps'])
            weights.addcdiv_(exp_avg, denom, value=-group['lr'] * step_size)
        else:
            weights.add_(exp_avg, alpha=-group['lr'] * step_size)
        p.copy_(weights)

        if step % group['k'] == 0:
            slow = state['slow_buffer']
            slow.add_(p - slow, alpha=group['alpha'])
            p.copy_(slow)


def centralize_gradient(grad):
    """Subtract the mean over all but the first (output) dimension (Yong et al. 2020)."""
    return grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)


def radam_step_size(step, beta1, beta2):
    """RAdam's bias-corrected step size at ``step`` and whether it is variance-rectified."""
    beta2_t = beta2 ** step
    sma_max = 2 / (1 - beta2) - 1
    sma = sma_max - 2 * step * beta2_t / (1 - beta2_t)
    bias1 = 1 - beta1 ** step
    if sma < SMA_THRESHOLD:
        return 1 / bias1, False
    rect = ((1 - beta2_t) * (sma - 4) / (sma_max - 4) * (sma - 2) / sma
            * sma_max / (sma_max - 2))
    return math.sqrt(rect) / bias1, True
