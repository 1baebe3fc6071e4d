import assert from "node:assert/strict";
import {
  FileTooLarge,
  parseJson,
  readBounded,
  show,
  type SyncReadable,
  TooLargeNumber,
} from "../lib/inputs.ts";

/** A file of `size` bytes (endless when Infinity) that counts what was read from it. */
function file(size: number, chunk = 4096): SyncReadable & { read: number; closed: boolean } {
  const f = {
    read: 0,
    closed: false,
    readSync(buffer: Uint8Array): number | null {
      const n = Math.min(buffer.length, chunk, size - f.read);
      if (n <= 0) return null;
      buffer.fill(0x61, 0, n);
      f.read += n;
      return n;
    },
    close() {
      f.closed = true;
    },
  };
  return f;
}

Deno.test("readBounded reads a file within its limit whole", () => {
  const f = file(10_000);
  assert.equal(readBounded(f, 10_000), "a".repeat(10_000));
  assert.ok(f.closed);
});

Deno.test("readBounded stops an endless file one byte past its limit", () => {
  const f = file(Infinity);
  assert.throws(() => readBounded(f, 100_000), (e) => {
    assert.ok(e instanceof FileTooLarge);
    assert.equal(e.message, "larger than 100000 bytes, the most refresh reads of it");
    return true;
  });
  assert.equal(f.read, 100_001);
  assert.ok(f.closed);
});

Deno.test("readBounded reads /dev/zero only up to its limit", () => {
  const started = performance.now();
  assert.throws(() => readBounded(Deno.openSync("/dev/zero"), 1024 * 1024), FileTooLarge);
  assert.ok(performance.now() - started < 1_000);
});

Deno.test("parseJson keeps the text of a number JavaScript cannot hold", () => {
  const value = parseJson(
    '{"a": 1e400, "b": [-2e999], "c": 12345678901234567890, "d": 1.5}',
  ) as Record<string, unknown>;
  assert.deepEqual(value.a, new TooLargeNumber("1e400"));
  assert.deepEqual(value.b, [new TooLargeNumber("-2e999")]);
  assert.deepEqual(value.c, new TooLargeNumber("12345678901234567890"));
  assert.equal(value.d, 1.5);
  assert.equal(show(value.a), "1e400 (a number too large)");
  assert.equal(show(value.b), '["-2e999 (a number too large)"]');
});
