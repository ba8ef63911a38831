# llm4rec on one CUDA GPU. Build: docker build -t llm4rec .
# Run:   docker run --gpus all -v $PWD/models:/app/models -v $PWD/data:/app/data -v $PWD/runs:/app/runs \
#          llm4rec recipes/tallrec_ml1m.yaml
# (Not built in llm4rec's CI, which has no Docker engine and no GPU.)
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY llm4rec ./llm4rec
# Installs through the lock (constraints.txt pins everything but torch); the image's CUDA torch already
# satisfies torch>=2.6, so pip keeps it.
RUN pip install --upgrade pip && pip install -c constraints.txt .
COPY train.py ./
COPY recipes ./recipes
COPY data_prep ./data_prep
COPY scripts ./scripts

ENTRYPOINT ["accelerate", "launch", "--num_processes", "1", "--mixed_precision", "no", "train.py"]
CMD ["recipes/tallrec_ml1m.yaml"]
