"""Batching: the requests that arrive while a batch runs go next, together, in one
Session call (TensorFlow Serving's batching, reduced to what a small model needs)."""

import asyncio
import collections
import concurrent.futures

import numpy as np

from graph_mnist.serving.errors import Unloaded


class Batcher:
    """Runs the requests given to one signature, several at a time, one batch at a time.

    `await batcher(inputs, n)` from the event loop; run(inputs) -> outputs, both {name:
    array with the examples along axis 0}, runs in the batcher's own thread (a Session
    call releases the interpreter's lock). While one batch runs, the requests that arrive
    wait together and go next as one batch of up to `max_batch_size` examples: a lone
    request never waits, a crowd is batched. With `timeout` > 0 a batch smaller than the
    most also waits that long for company (TensorFlow Serving's batch_timeout_micros).
    Refused input fails the batch: it is then run request by request, so that only the
    bad request fails."""

    def __init__(self, run, max_batch_size, timeout, name):
        self.run, self.max_batch_size, self.timeout = run, max_batch_size, timeout
        self.waiting = collections.deque()
        self.draining = None  # the task running batches, while there are any
        self.stopped = False
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def __call__(self, inputs, n):
        if self.stopped:
            raise Unloaded()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((inputs, n, future))
        if self.draining is None:
            self.draining = loop.create_task(self.drain())
        return await future

    async def drain(self):
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                if self.timeout and self.size() < self.max_batch_size:
                    await asyncio.sleep(self.timeout)
                batch = self.take()
                results = await loop.run_in_executor(self.thread, self.answer, batch)
                for (_, _, future), (value, error) in zip(batch, results):
                    if future.done():  # the client went away
                        continue
                    if error is None:
                        future.set_result(value)
                    else:
                        future.set_exception(error)
        finally:
            self.draining = None

    def size(self):
        return sum(n for _, n, _ in self.waiting)

    def take(self):
        batch, size = [self.waiting.popleft()], 0
        size = batch[0][1]
        while self.waiting and size + self.waiting[0][1] <= self.max_batch_size:
            batch.append(self.waiting.popleft())
            size += batch[-1][1]
        return batch

    def answer(self, batch):
        """[(outputs, None) or (None, error)] for the requests of a batch (its thread)."""
        def alone(inputs):
            try:
                return self.run(inputs), None
            except Exception as e:  # the request's own failure, reported to it alone
                return None, e
        if len(batch) == 1:
            return [alone(batch[0][0])]
        joined = {name: np.concatenate([inputs[name] for inputs, _, _ in batch])
                  for name in batch[0][0]}
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
        while self.draining is not None:
            await asyncio.sleep(0.01)
        self.thread.shutdown()
