"""Check Ranger, attention, losses and mixing on CUDA against the same code on CPU.

Run: python -m benchmarks.tricks_cuda_check   (needs a GPU; prints one line per check)
"""
import time

import torch
from torchvision.models import resnet18

from models.layers.attention import add_attention
from third_party.ranger import Ranger
from utils.train.losses import LabelSmoothSoftmaxCE, class_weights
from data.mix import MixBatch, mixed_criterion


def train(device, steps=8, kind='cbam'):
    torch.manual_seed(0)
    model = add_attention(resnet18(weights=None, num_classes=10), kind).to(device)
    optimizer = Ranger(model.parameters(), lr=1e-3, k=3)
    weight = class_weights([5, 10, 20, 40, 5, 10, 20, 40, 5, 10], 'effective_number').to(device)
    criterion = LabelSmoothSoftmaxCE(weight=weight).to(device)
    mix = MixBatch(cutmix_prob=0.5, mixup_prob=0.5, generator=torch.Generator().manual_seed(0))
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(7, 3, 64, 64, generator=data).to(device)
        y = torch.randint(0, 10, (7,), generator=data).to(device)
        x, y_a, y_b, lam = mix(x, y)
        loss = mixed_criterion(criterion, model(x), y_a, y_b, lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer, loss.item()


def main():
    print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_model, _, cpu_loss = train('cpu')
    gpu_model, gpu_opt, gpu_loss = train('cuda')
    diff = max((a.cpu() - b).abs().max().item()
               for a, b in zip(gpu_model.state_dict().values(), cpu_model.state_dict().values())
               if a.is_floating_point())
    print(f'cpu loss {cpu_loss:.6f} cuda loss {gpu_loss:.6f} max weight diff {diff:.2e}')
    state = gpu_opt.state_dict()['state'][0]
    print('optimizer state on', state['slow_buffer'].device, 'step', state['step'])

    model = resnet18(weights=None, num_classes=10).cuda()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    for name, opt in (('ranger', Ranger(params)), ('torch RAdam', torch.optim.RAdam(params))):
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(50):
            opt.step()
        torch.cuda.synchronize()
        print(f'{name} step on resnet18 (11.7M params): {(time.perf_counter() - t) / 50 * 1e3:.2f} ms')

    x = torch.randn(64, 3, 64, 64, device='cuda')
    for kind in ('none', 'se', 'cbam'):
        m = add_attention(resnet18(weights=None, num_classes=10), kind).cuda()
        for _ in range(3):
            m(x).sum().backward()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            m(x).sum().backward()
        torch.cuda.synchronize()
        print(f'resnet18 {kind}: fwd+bwd batch 64 @64px {(time.perf_counter() - t) / 20 * 1e3:.2f} ms')


if __name__ == '__main__':
    main()
