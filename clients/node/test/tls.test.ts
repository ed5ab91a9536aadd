// HTTPS: a `drove serve --tls-cert --tls-key` with a throwaway CA and certificate made here
// (openssl), reached by the client with `ca`: a job submitted and worked over https; without
// the CA the certificate is refused.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Drove, DroveError } from 'drove-client';

import { startServer, type Server } from './harness.js';

let server: Server;
let ca: string;

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

let certDir: string;

before(async () => {
  const dir = (certDir = await mkdtemp(join(tmpdir(), 'drove-node-tls-')));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Drove throwaway test CA');
  openssl(dir, 'req', ...ec, '-keyout', 'key.pem', '-out', 'req.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl(dir, 'x509', '-req', '-in', 'req.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '1', '-extfile', 'san.ext');
  ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
  server = await startServer({ args: ['--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')], ca });
});

after(async () => {
  await server?.stop();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

test('a job submitted and worked over https with the CA given as ca', async () => {
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const drove = new Drove({ url: server.url.replace('127.0.0.1', 'localhost'), ca });
  const worker = drove.worker('tls', async ({ payload }) => ({ echoed: payload }), { concurrency: 2 });
  try {
    const result = await drove.submitAndWait('tls', { over: 'https' }, { waitMs: 60_000 });
    assert.deepEqual(result, { echoed: { over: 'https' } });
  } finally {
    await worker.close();
  }
});

test('without the CA the server certificate is refused', async () => {
  const drove = new Drove({ url: server.url });
  await assert.rejects(drove.submit('tls', 1), (err: unknown) => {
    assert.ok(err instanceof DroveError, String(err));
    assert.equal(err.code, 'unreachable');
    assert.match(err.message, /certificate/i);
    return true;
  });
});
