// drove-client: the Node.js client of Drove (see README.md).

export { Drove, isTerminal, type DroveOptions } from './client.js';
export { Schedules } from './schedules.js';
export {
  Worker,
  BatchWorker,
  PartialResult,
  partial,
  AwaitChildren,
  awaitChildren,
  type ChildSpec,
  type Handler,
  type JobContext,
  type WorkerOptions,
  type BatchHandler,
  type BatchItem,
  type BatchOutcome,
  type BatchWorkerOptions,
} from './worker.js';
export { isTransientError, classifyError, type Classifier, type ErrorClass } from './classify.js';
export {
  DroveError,
  LeaseLostError,
  KeyConflictError,
  JobFailedError,
  WaitTimeoutError,
  Throttled,
  Transient,
  parseRetryAfter,
  type ResponseLike,
  Permanent,
  Snooze,
  JobCancelledError,
  JobTimeoutError,
  WorkerClosedError,
} from './errors.js';
export type * from './types.js';
