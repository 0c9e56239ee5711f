// Just enough ELF reading to check a built executable without running it: its class and machine,
// and the SEA blob Node.js injected as the note NODE_SEA_BLOB.
export const EM = { x64: 62, arm64: 183 };
const PT_NOTE = 4;

/** {class64, machine, notes: [{name, desc}]} of a little-endian ELF file (Node's Linux builds). */
export function readElf(buf) {
  if (buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const machine = buf.readUInt16LE(18);
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  const notes = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (buf.readUInt32LE(ph) !== PT_NOTE) continue;
    const off = Number(buf.readBigUInt64LE(ph + 8));
    const size = Number(buf.readBigUInt64LE(ph + 32));
    for (let p = off; p + 12 <= off + size; ) {
      const namesz = buf.readUInt32LE(p);
      const descsz = buf.readUInt32LE(p + 4);
      const nameStart = p + 12;
      const descStart = nameStart + Math.ceil(namesz / 4) * 4;
      notes.push({ name: buf.subarray(nameStart, nameStart + namesz).toString('latin1').replace(/\0+$/, ''), desc: buf.subarray(descStart, descStart + descsz) });
      p = descStart + Math.ceil(descsz / 4) * 4;
    }
  }
  return { machine, notes };
}

/** The SEA blob in an executable built with `node --build-sea`, or undefined. */
export function seaBlob(buf) {
  return readElf(buf).notes.find((n) => n.name === 'NODE_SEA_BLOB')?.desc;
}
