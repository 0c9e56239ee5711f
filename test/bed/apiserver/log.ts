/** klog-style lines on stderr (the kubelet stand-in keeps them as the container log). */
export function klog(severity: 'I' | 'W' | 'E', source: string, message: string): void {
  const d = new Date();
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const stamp = `${pad(d.getMonth() + 1)}${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}000`;
  process.stderr.write(`${severity}${stamp} ${String(process.pid).padStart(7)} ${source}] ${message}\n`);
}
