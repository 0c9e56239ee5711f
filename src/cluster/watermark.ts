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
 *
 * The queue is a ring of parallel arrays indexed by a ticket (the dispatch sequence number), not
 * a Map of per-object entries: an object in flight outlives a young-generation GC or two, so
 * every entry object and Map bucket allocated per PUT was promoted and became old-space garbage
 * (measured: about a quarter of what re-encrypt-all promoted). Here a PUT allocates nothing; the
 * arrays grow (doubling) to the most ever in flight and are reused.
 */
export class Watermark {
  private keys: (string | undefined)[] = new Array(64);
  private pages: (string | undefined)[] = new Array(64);
  private finished: Uint8Array = new Uint8Array(64);
  /** Ticket of the oldest unfinished dispatch, and the next ticket to hand out. */
  private head = 0;
  private tail = 0;
  doneThrough?: string;
  pageContinue?: string;

  constructor(doneThrough?: string, pageContinue?: string) {
    this.doneThrough = doneThrough;
    this.pageContinue = pageContinue;
  }

  /** Records a dispatch (in key order) and returns its ticket, for done(). */
  dispatched(key: string, page: string | undefined): number {
    if (this.tail - this.head === this.keys.length) this.grow();
    const i = this.tail & (this.keys.length - 1);
    this.keys[i] = key;
    this.pages[i] = page;
    this.finished[i] = 0;
    return this.tail++;
  }

  /** The dispatch with this ticket finished (in any order); a ticket not pending is ignored. */
  done(ticket: number): void {
    if (ticket < this.head || ticket >= this.tail) return;
    const mask = this.keys.length - 1;
    this.finished[ticket & mask] = 1;
    while (this.head < this.tail && this.finished[this.head & mask] === 1) {
      const i = this.head & mask;
      this.doneThrough = this.keys[i];
      this.pageContinue = this.pages[i];
      this.keys[i] = undefined;
      this.pages[i] = undefined;
      this.finished[i] = 0;
      this.head++;
    }
  }

  get pending(): number {
    return this.tail - this.head;
  }

  private grow(): void {
    const n = this.keys.length;
    const keys: (string | undefined)[] = new Array(n * 2);
    const pages: (string | undefined)[] = new Array(n * 2);
    const finished = new Uint8Array(n * 2);
    for (let t = this.head; t < this.tail; t++) {
      keys[t & (n * 2 - 1)] = this.keys[t & (n - 1)];
      pages[t & (n * 2 - 1)] = this.pages[t & (n - 1)];
      finished[t & (n * 2 - 1)] = this.finished[t & (n - 1)]!;
    }
    this.keys = keys;
    this.pages = pages;
    this.finished = finished;
  }
}
