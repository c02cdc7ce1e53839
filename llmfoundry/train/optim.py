"""Optimizers: AdamW (torch, fused/foreach), Composer's decoupled AdamW, and Lion.

Weight decay never applies to 1-D parameters (biases, norm weights) nor to embeddings: decaying them hurts
and is what nanoGPT, LLM Foundry and most recipes avoid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmfoundry.config.schema import OptimizerConfig
from llmfoundry.errors import UserError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class DecoupledAdamW(torch.optim.AdamW):
    """AdamW whose decay is scaled by lr / initial_lr instead of lr (Composer's DecoupledAdamW).

    With a schedule, the decay follows the schedule's shape but `weight_decay` is an absolute rate per
    step at peak (1e-5 means 1e-5), independent of the learning-rate magnitude.
    """

    def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, **kwargs)
        for group in self.param_groups:
            group.setdefault("initial_lr", lr)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            if group["weight_decay"]:
                factor = group["lr"] / group["initial_lr"] * group["weight_decay"]
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - factor)
        decays = [g["weight_decay"] for g in self.param_groups]
        for group in self.param_groups:
            group["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for group, decay in zip(self.param_groups, decays):
                group["weight_decay"] = decay


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum; decoupled weight decay like DecoupledAdamW."""

    def __init__(self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 decoupled: bool = True) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay, "initial_lr": lr})
        self.decoupled = decoupled

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            decay = group["weight_decay"] * (lr / group["initial_lr"] if self.decoupled else lr)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                if decay:
                    p.mul_(1 - decay)
                update = exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return None


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if len(cfg.betas) != 2:
        raise UserError(f"optimizer.betas: expected two numbers, got {cfg.betas}")
    groups = param_groups(model, cfg.weight_decay)
    betas = (cfg.betas[0], cfg.betas[1])
    # one fused kernel per step on GPUs; on CPU the multi-tensor (foreach) path, whose results tests pin
    on_gpu = all(p.is_cuda for group in groups for p in group["params"])
    kernel = {"fused": True} if on_gpu else {"foreach": True}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, **kernel)
    if cfg.name == "decoupled_adamw":
        return DecoupledAdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, **kernel)
    return Lion(groups, lr=cfg.lr, betas=betas, decoupled=cfg.name == "decoupled_lionw")
