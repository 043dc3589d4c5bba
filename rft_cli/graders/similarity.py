"""OpenAI's `text_similarity` grader, on well-kept libraries (rapidfuzz, sacrebleu, NLTK, rouge-score).

Metrics: fuzzy_match (rapidfuzz `fuzz.ratio` / 100), bleu (sacrebleu sentence BLEU / 100),
gleu (NLTK sentence GLEU), meteor (NLTK, needs WordNet data installed), rouge_1..rouge_5 and
rouge_l (rouge-score F-measure), cosine (mean-pooled embeddings of a local `embedding_model`).
"""

from __future__ import annotations

import re
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.files import is_dir
from rft_cli.graders.base import GradeResult, TemplatedGrader
from rft_cli.graders.lcs import lcs_length
from rft_cli.graders.specs import TextSimilaritySpec
from rft_cli.graders.templates import GradeContext, Template

_WORD = re.compile(r"\w+|[^\w\s]")
WORDNET_HELP = (
    "meteor needs NLTK's WordNet data, which is not installed; install it once with "
    "`python -m nltk.downloader wordnet omw-1.4` (or point NLTK_DATA at a folder that has it); "
    "rft never downloads data while grading"
)


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation (no NLTK tokenizer data needed)."""
    return _WORD.findall(text.lower())


def wordnet_available() -> bool:
    """True when NLTK can load WordNet offline."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(resource)
            return True
        except LookupError:
            continue
    return False


def _fuzzy(text: str, reference: str) -> float:
    """rapidfuzz's `fuzz.ratio` / 100 (the same float), from a bounded LCS (`lcs.py`)."""
    total = len(text) + len(reference)
    if not total:
        return 1.0
    distance = total - 2 * lcs_length(text, reference)
    return (1.0 - distance / total) * 100 / 100


def _bleu(text: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(text, [reference]).score / 100.0


def _gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    hypothesis, ref = tokens(text), tokens(reference)
    return sentence_gleu([ref], hypothesis) if hypothesis and ref else float(hypothesis == ref)


def _meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([tokens(reference)], tokens(text)))


# Scripts written without spaces between words: each character is a token.
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_ROUGE_TOKEN = re.compile(f"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[^\\W_])+")


class RougeTokenizer:
    """rouge-score's tokenizer for every script: lower-cased runs of Unicode letters and digits,
    and one token per character in scripts written without spaces (Chinese, Japanese, Thai, ...).
    On ASCII text it gives rouge-score's own tokens; rouge-score's default drops every non-ASCII
    letter, so two identical Japanese texts would score 0.

    >>> RougeTokenizer().tokenize("Café 東京, ok")
    ['café', '東', '京', 'ok']
    """

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall(text.lower())


class _Rouge:
    """A picklable rouge-score metric (the scorer is rebuilt lazily after unpickling)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._scorer: Any = None

    def __call__(self, text: str, reference: str) -> float:
        if self._scorer is None:
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer(
                [self.key], use_stemmer=False, tokenizer=RougeTokenizer()
            )
        return self._scorer.score(reference, text)[self.key].fmeasure

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self.key, "_scorer": None}


class _RougeL:
    """rouge-score's rougeL F-measure on RougeTokenizer's tokens, with a bounded LCS (`lcs.py`):
    rouge-score's own table is quadratic in time and memory."""

    def __call__(self, text: str, reference: str) -> float:
        tokenizer = RougeTokenizer()
        prediction, target = tokenizer.tokenize(text), tokenizer.tokenize(reference)
        if not prediction or not target:
            return 0.0
        common = lcs_length(target, prediction)
        precision, recall = common / len(prediction), common / len(target)
        return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


class _Cosine:
    """Cosine similarity of mean-pooled hidden states from a local model directory, clamped to [0, 1]."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self._model: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._model = AutoModel.from_pretrained(self.model_dir).eval()

    def _embed(self, text: str) -> Any:
        import torch

        encoded = self._tokenizer(text or " ", return_tensors="pt", truncation=True, max_length=512)
        encoded.pop("token_type_ids", None)
        with torch.no_grad():
            hidden = self._model(**encoded).last_hidden_state[0]
        return hidden.mean(dim=0)

    def __call__(self, text: str, reference: str) -> float:
        import torch

        if self._model is None:
            self._load()
        a, b = self._embed(text), self._embed(reference)
        return max(0.0, float(torch.nn.functional.cosine_similarity(a, b, dim=0)))

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "_model": None}


_METRICS = {"fuzzy_match": _fuzzy, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor}


class TextSimilarityGrader(TemplatedGrader):
    """Score how similar `input` is to `reference`, in [0, 1].

    >>> TextSimilarityGrader(TextSimilaritySpec(type="text_similarity", input="{{ sample.output_text }}", reference="kitten", evaluation_metric="fuzzy_match")).grade("sitting", {}).reward
    0.6153846153846154
    """

    def __init__(self, spec: TextSimilaritySpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "text_similarity"
        self.pass_threshold = spec.pass_threshold
        self.input = Template(spec.input, f"{where}.input" if where else "input")
        self.reference = Template(spec.reference, f"{where}.reference" if where else "reference")
        self.templates = (self.input, self.reference)
        self.metric = self._metric(
            spec, f"{where}.evaluation_metric" if where else "evaluation_metric"
        )

    @staticmethod
    def _metric(spec: TextSimilaritySpec, where: str) -> Any:
        name = spec.evaluation_metric
        if name == "meteor" and not wordnet_available():
            raise GraderError(f"{where}: {WORDNET_HELP}")
        if name == "rouge_l":
            return _RougeL()
        if name.startswith("rouge_"):
            return _Rouge(f"rouge{name[-1]}")
        if name == "cosine":
            if not spec.embedding_model:
                raise GraderError(
                    f"{where}: cosine needs a local embedding model; set embedding_model to a model directory "
                    "saved with save_pretrained (rft does not call hosted embedding APIs)"
                )
            if not is_dir(spec.embedding_model):
                raise GraderError(
                    f"{where}: embedding_model {spec.embedding_model!r} is not a local directory"
                )
            return _Cosine(spec.embedding_model)
        return _METRICS[name]

    def _score(self, ctx: GradeContext) -> GradeResult:
        score = float(self.metric(self.input.render(ctx), self.reference.render(ctx)))
        return GradeResult(min(1.0, max(0.0, score)))
