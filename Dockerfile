# CEKD-PyTorch on an NVIDIA GPU (needs the NVIDIA Container Toolkit on the host).
#
#   docker build -t cekd-pytorch .
#   docker run -it --gpus all -v $(pwd):/workspace cekd-pytorch bash
#     # inside: python3 trainTeacher.py ...; python3 trainStudent.py ...
#     # tests:  python3 -m pip install -r requirements-test.txt && python3 -m pytest -q tests
#   (add --ipc=host or --shm-size=8g when DataLoader workers run out of shared memory)
#
# The base image ships torch 2.14.1+cu130 and torchvision 0.29.1+cu130, the versions that
# requirements.txt pins: a pin without a local label (torch==2.14.1) is satisfied by the
# +cu130 build, so pip keeps the image's CUDA torch and installs only the other packages.
# The check after the install fails the build if pip ever replaced it (e.g. after a pin change
# without a matching base-image change).
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

# Recent pytorch/pytorch images use the system Python of Ubuntu, which is marked "externally
# managed" (PEP 668); installing into it is what the image is for.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1

WORKDIR /workspace

COPY requirements.txt .
RUN python3 -m pip install --no-cache-dir -r requirements.txt \
 && python3 -c "import torch, torchvision; \
assert torch.__version__.split('+')[0] == '2.14.1' and torch.version.cuda, torch.__version__; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'torchvision', torchvision.__version__)"

# The project itself; `-v $(pwd):/workspace` at run time lays the host's copy over it.
COPY . .

CMD ["bash"]
