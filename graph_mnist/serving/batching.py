"""Batching: the requests that arrive while a batch runs go next, together, in one
Session call (TensorFlow Serving's batching, reduced to what a small model needs)."""

import asyncio
import collections
import concurrent.futures

import numpy as np

from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import Unloaded

MAX_ENQUEUED_BATCHES = 100  # per signature and process: a bound TF Serving leaves open


class Batcher:
    """Runs the requests given to one signature, several at a time, a batch at a time per
    thread.

    `await batcher(inputs, n)` from the event loop; run(inputs) -> outputs, both {name:
    array with the examples along axis 0}, runs in the batcher's own thread (a Session
    call releases the interpreter's lock). While one batch runs, the requests that arrive
    wait together and go next as one batch of up to `max_batch_size` examples: a lone
    request never waits, a crowd is batched. With `timeout` > 0 a batch smaller than the
    most also waits that long for company (TensorFlow Serving's batch_timeout_micros).
    Refused input fails the batch: it is then run request by request, so that only the
    bad request fails; so are requests whose examples differ in shape or type (they
    cannot be joined). At most `max_enqueued_batches` batches' worth of examples wait:
    beyond, a request is refused at once with 503, as TensorFlow Serving's full queue.
    observe(batch size, requests still waiting) is told of every batch run. `threads`
    batches may run at once (TF Serving's num_batch_threads; a Session runs calls
    concurrently)."""

    def __init__(self, run, max_batch_size, timeout, name,
                 max_enqueued_batches=MAX_ENQUEUED_BATCHES, observe=None, threads=1):
        self.run, self.max_batch_size, self.timeout = run, max_batch_size, timeout
        self.max_waiting = max_enqueued_batches * max_batch_size  # examples
        self.observe = observe
        self.waiting = collections.deque()
        self.examples_waiting = 0
        self.threads = threads  # batches run at once (TF Serving's num_batch_threads)
        self.draining = set()  # the tasks running batches, while there are any
        self.stopped = False
        self.thread = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def __call__(self, inputs, n):
        if self.stopped:
            raise Unloaded()
        if self.examples_waiting and self.examples_waiting + n > self.max_waiting:
            raise ServingError(503, 'The batch scheduling queue to which this task was '
                                    'submitted is full')
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((inputs, n, future))
        self.examples_waiting += n
        if len(self.draining) < self.threads:
            self.draining.add(loop.create_task(self.drain()))
        return await future

    async def drain(self):
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                if self.timeout and self.size() < self.max_batch_size:
                    await asyncio.sleep(self.timeout)
                    if not self.waiting:  # another thread's batch took them
                        break
                batch = self.take()
                if self.observe is not None:
                    self.observe(sum(n for _, n, _ in batch), len(self.waiting))
                results = await loop.run_in_executor(self.thread, self.answer, batch)
                for (_, _, future), (value, error) in zip(batch, results):
                    if future.done():  # the client went away
                        continue
                    if error is None:
                        future.set_result(value)
                    else:
                        future.set_exception(error)
        finally:
            self.draining.discard(asyncio.current_task())

    def size(self):
        return self.examples_waiting

    def take(self):
        batch, size = [self.waiting.popleft()], 0
        size = batch[0][1]
        while self.waiting and size + self.waiting[0][1] <= self.max_batch_size:
            batch.append(self.waiting.popleft())
            size += batch[-1][1]
        self.examples_waiting -= size
        return batch

    def answer(self, batch):
        """[(outputs, None) or (None, error)] for the requests of a batch (its thread)."""
        def alone(inputs):
            try:
                return self.run(inputs), None
            except Exception as e:  # noqa: BLE001 -- the request's own failure, to it alone
                return None, e
        if len(batch) == 1:
            return [alone(batch[0][0])]
        first = batch[0][0]
        if any(set(inputs) != set(first) or any(
                inputs[k].shape[1:] != first[k].shape[1:] or inputs[k].dtype != first[k].dtype
                for k in first) for inputs, _, _ in batch[1:]):
            return [alone(inputs) for inputs, _, _ in batch]  # cannot be joined
        joined = {name: np.concatenate([inputs[name] for inputs, _, _ in batch])
                  for name in first}
        outputs, error = alone(joined)
        if error is not None:  # one request refused: find it, answer the others
            return [alone(inputs) for inputs, _, _ in batch]
        results, start = [], 0
        for _, n, _ in batch:
            results.append(({name: value[start:start + n] for name, value in outputs.items()},
                            None))
            start += n
        return results

    async def stop(self):
        """No new requests; those given are answered first."""
        self.stopped = True
        while self.draining:
            await asyncio.sleep(0.01)
        self.thread.shutdown()
