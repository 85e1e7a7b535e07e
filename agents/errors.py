"""Errors of the agents layer: LLM calls, embeddings, tools, plans and runs.

AutoagentError                       (events.errors) root of everything raised on purpose
 +-- AgentError                      the agents layer refused or failed an operation
      +-- LLMError                   a call to a language model did not produce a usable answer
      |    +-- RateLimited           the endpoint said 429 (retry_after: seconds it asked for)
      |    +-- ProviderUnavailable   the endpoint cannot be reached (names `llm.base_url`)
      |    +-- AuthenticationFailed  the key is missing or refused (names `llm.api_key_env`)
      |    +-- UnknownModel          the endpoint does not serve the model (names `llm.model`)
      |    +-- BadRequest            the endpoint rejected the request as malformed (400, 422)
      |    +-- ProviderError         any other error status (5xx, 408, 409...; status_code)
      |    +-- InvalidModelOutput    the answer is not JSON, or not the shape asked for
      |    +-- LLMTimeout            one attempt took longer than `llm.timeout_s`
      |    +-- RetriesExhausted      every attempt failed (attempts, last_error)
      +-- UnknownProvider            `llm.provider` names no provider
      +-- UnknownPrompt              no prompt template file of that name
      +-- PromptUnreadable           a prompt template file that cannot be read as text
      +-- EmbeddingError             an embedder could not embed
      |    +-- InvalidEmbeddingInput, UnknownEmbeddingProvider, EmbedderUnavailable,
      |        EmbeddingRequestFailed, InvalidEmbeddingResponse
      +-- ToolError                  a tool could not do what a step asked
      |    +-- InvalidParameters     the step's parameters do not fit the tool
      |    |    +-- PathNotAllowed, InvalidCollection
      |    +-- FileTooLarge, AddressRefused, UnknownCollection, DocumentUnreadable,
      |        UnsupportedDocument, CollectionModelConflict, TooManyDocuments, NothingToIndex
      +-- UnknownAgent               no registered agent of that name
      +-- InvalidPlan                a plan that is not a valid DAG of known tools
      |    +-- PlanRefused           the model said it cannot plan the goal
      +-- InvalidGoal, RunNotFound, RunAlreadyFinished, RunAlreadyRunning, RunNotRetryable
      +-- ApprovalNotPending         a decision for a step with no pending approval

Which are worth another attempt is a property of the class (`retryable`), so the retry
loop never inspects messages or status codes itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from events.errors import AutoagentError


class AgentError(AutoagentError):
    """The agents layer refused or failed an operation."""


class LLMError(AgentError):
    """A call to a language model did not produce a usable answer."""

    retryable: bool = False


class RateLimited(LLMError):
    """The endpoint answered 429; `retry_after` is the wait it asked for (None: unsaid)."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ProviderUnavailable(LLMError):
    """The endpoint at `llm.base_url` cannot be reached (refused, reset, DNS...)."""

    retryable = True

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        self.reason = reason
        super().__init__(f"cannot reach the LLM endpoint {base_url} (llm.base_url): {reason}")


class AuthenticationFailed(LLMError):
    """The API key is missing, or the endpoint refused it."""

    def __init__(self, api_key_env: str, reason: str) -> None:
        self.api_key_env = api_key_env
        self.reason = reason
        super().__init__(f"{reason} (the key is read from ${api_key_env}, set by llm.api_key_env)")


class UnknownModel(LLMError):
    """The endpoint does not serve the model named by `llm.model`."""

    def __init__(self, model: str, base_url: str) -> None:
        self.model = model
        self.base_url = base_url
        super().__init__(f"the endpoint {base_url} does not serve model {model!r} (llm.model)")


class BadRequest(LLMError):
    """The request was malformed: refused by the endpoint (400, 422) or before sending."""


class ProviderError(LLMError):
    """Any other error status; 408, 409 and 5xx are worth another attempt."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        self.retryable = status_code in (408, 409) or status_code >= 500
        super().__init__(f"LLM endpoint answered {status_code}: {message}")


class InvalidModelOutput(LLMError):
    """The model's answer is not a JSON object, or lacks what the request asked for.

    Retryable: a model asked again often answers well, and the simulator's injected
    truncated bodies land here too.
    """

    retryable = True

    def __init__(self, reason: str, text: str = "") -> None:
        self.reason = reason
        self.text = text
        super().__init__(f"invalid model output: {reason}")


class LLMTimeout(LLMError):
    """One attempt took longer than the configured timeout (`llm.timeout_s`)."""

    retryable = True

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"the LLM call took longer than {timeout_s:g} s (llm.timeout_s)")


class RetriesExhausted(LLMError):
    """Every attempt failed; `last_error` says how the final one did."""

    def __init__(self, attempts: int, last_error: LLMError, why: str = "") -> None:
        self.attempts = attempts
        self.last_error = last_error
        reason = f" ({why})" if why else ""
        super().__init__(f"LLM call failed after {attempts} attempts{reason}: {last_error}")


class UnknownProvider(AgentError):
    """`llm.provider` names a provider that does not exist."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown LLM provider {name!r} (llm.provider); expected one of {known}")


class UnknownPrompt(AgentError):
    """No prompt template of that name ships with the package."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no prompt template named {name!r} (agents/prompts/{name}.txt)")


class PromptUnreadable(AgentError):
    """A prompt template file exists but cannot be read as UTF-8 text."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"prompt template {name!r} cannot be read: {reason}")


# --- tools, plans and runs (the orchestrator) -----------------------------------------


class ToolError(AgentError):
    """A tool refused its parameters or failed; `retryable` says if trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InvalidParameters(ToolError):
    """Parameters that do not match the tool's declared schema."""


class UnknownAgent(AgentError):
    """No agent is registered (or enabled) under that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown agent {name!r}; known: {', '.join(sorted(known)) or 'none'}")


class InvalidPlan(AgentError):
    """A plan that is not a DAG over known tools with valid parameters; `problems` lists why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems))


class InvalidGoal(AgentError):
    """A goal that is empty, too long or not text."""


class RunNotFound(AgentError):
    """No run with that id in the log."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class RunNotRetryable(AgentError):
    """A retry of a run that did not fail or was not cancelled, or was retried already."""

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id!r} cannot be retried: {reason}")


class SessionNotYours(AgentError):
    """A `user` principal posted into a session another principal started."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r} is not yours")


class RunAlreadyFinished(AgentError):
    """A resume or cancel of a run that already completed, failed or was cancelled."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id!r} is already {status}")


class RunAlreadyRunning(AgentError):
    """An execute or resume of a run this process is already executing."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} is already running")


class PathNotAllowed(InvalidParameters):
    """A path that leaves the workspace roots; `path` as given, `reason` says how."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"path {path!r} is not allowed: {reason}")


class FileTooLarge(ToolError):
    """A file or content over the configured size limit (`agents.max_file_bytes`)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is {size} bytes, over the limit of {limit} (agents.max_file_bytes)"
        )


class AddressRefused(ToolError):
    """The URL's host resolves to an address the server must not reach."""


class UnknownCollection(ToolError):
    """A search or listing names a collection nothing is indexed in."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet"
        super().__init__(f"no documents are indexed in collection {name!r} (collections: {listed})")


class DocumentUnreadable(ToolError):
    """A file of a supported type whose text cannot be extracted (corrupt, encrypted...)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot extract the text of {path}: {reason}")


class UnsupportedDocument(ToolError):
    """A file whose suffix is not one of `SUPPORTED_SUFFIXES`."""

    def __init__(self, path: Path, suffixes: Iterable[str]) -> None:
        self.path = path
        supported = ", ".join(sorted(suffixes))
        super().__init__(f"unsupported document type {path.suffix!r} ({path}); use {supported}")


class InvalidCollection(InvalidParameters):
    """A collection name that is not 1-64 letters, digits, '.', '_' or '-'."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(
            f"collection {name!r} is not a valid name: use 1-64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )


class CollectionModelConflict(ToolError):
    """The collection was embedded by another model than the embedder's."""

    def __init__(self, collection: str, indexed: str, embedder: str) -> None:
        self.collection = collection
        self.indexed = indexed
        self.embedder = embedder
        super().__init__(
            f"collection {collection!r} was embedded with {indexed!r} and the embedder is "
            f"{embedder!r} (embeddings.model); index into another collection"
        )


class TooManyDocuments(ToolError):
    """A folder holding more files than one indexing pass takes."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        super().__init__(f"{path} holds over {limit} files; index its subfolders one at a time")


class NothingToIndex(ToolError):
    """The path does not exist and nothing was indexed under it."""

    def __init__(self, path: str, looked_in: str = "") -> None:
        self.path = path
        self.looked_in = looked_in
        where = f" (looked for {looked_in})" if looked_in else ""
        super().__init__(f"nothing to index at {path!r}: no such file or folder{where}")


class PlanRefused(InvalidPlan):
    """The model said plainly it cannot plan this goal (an empty plan with a reason)."""


class ApprovalNotPending(AgentError):
    """A decision for a step that has no pending approval request."""

    def __init__(self, run_id: str, step_id: str, why: str) -> None:
        self.run_id = run_id
        self.step_id = step_id
        self.why = why
        super().__init__(f"no pending approval for step {step_id!r} of run {run_id!r}: {why}")


class EmbeddingError(AgentError):
    """An embedder refused or failed an operation."""


class InvalidEmbeddingInput(EmbeddingError, ValueError):
    """A text that cannot be embedded: not a str, or empty / whitespace only."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"cannot embed texts[{index}]: {reason}")


class UnknownEmbeddingProvider(EmbeddingError, ValueError):
    """`embeddings.provider` names an embedder that does not exist."""

    def __init__(self, name: object, known: Sequence[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown embeddings provider {name!r} (embeddings.provider); "
            f"expected one of {', '.join(known)}"
        )


class EmbedderUnavailable(EmbeddingError):
    """The model cannot be loaded, or the endpoint cannot be reached or refuses us."""


class EmbeddingRequestFailed(EmbeddingError):
    """A request failed, and splitting it did not help (or could not: a 429).

    `status_code` is the endpoint's answer (None: no answer, or an unusable one);
    `index` the text whose request failed on its own (None: not down to one text).
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, index: int | None = None
    ) -> None:
        self.status_code = status_code
        self.index = index
        super().__init__(message)


class InvalidEmbeddingResponse(EmbeddingError):
    """The endpoint answered, but not with one finite, non-zero vector per input."""
