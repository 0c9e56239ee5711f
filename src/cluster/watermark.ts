/**
 * Where a rewrite stands in one resource's key order. PUTs finish out of order; the watermark is
 * the highest key below which every dispatched object is done, with the continue token of its
 * page, so a resumed run lists from there and skips what is done.
 */

/** The key objects are listed in (etcd key order under /registry/<resource>/). */
export function objectKey(ns: string | undefined, name: string): string {
  return ns ? `${ns}/${name}` : name;
}

/** Byte-wise order of keys, the order etcd (and so the list) returns them in. */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

const ASCII = /^[\x00-\x7f]*$/;

/**
 * `a` comes after `b` in key order. Object names and namespaces are ASCII (DNS labels and
 * subdomains), where string order is byte order; anything else is compared as UTF-8 bytes.
 */
export function keyAfter(a: string, b: string): boolean {
  return ASCII.test(a) && ASCII.test(b) ? a > b : compareKeys(a, b) > 0;
}

/**
 * Tracks, for PUTs finishing out of order, the highest key below which every dispatched object
 * is done. Dispatch happens in key order, so it is the end of the finished prefix of the queue.
 */
export class Watermark {
  private queue: { key: string; page?: string; done: boolean }[] = [];
  private head = 0;
  private index = new Map<string, { key: string; page?: string; done: boolean }>();
  doneThrough?: string;
  pageContinue?: string;

  constructor(doneThrough?: string, pageContinue?: string) {
    this.doneThrough = doneThrough;
    this.pageContinue = pageContinue;
  }

  dispatched(key: string, page: string | undefined): void {
    const e = { key, page, done: false };
    this.queue.push(e);
    this.index.set(key, e);
  }

  done(key: string): void {
    const e = this.index.get(key);
    if (!e) return;
    e.done = true;
    this.index.delete(key);
    while (this.head < this.queue.length && this.queue[this.head]!.done) {
      const h = this.queue[this.head++]!;
      this.doneThrough = h.key;
      this.pageContinue = h.page;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  get pending(): number {
    return this.queue.length - this.head;
  }
}
