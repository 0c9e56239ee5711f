import type { CommandModule } from './types';
import { generateKeyCommand } from './generate-key';
import { validateConfigCommand } from './validate-config';
import { writeConfigCommand } from './write-config';
import { reEncryptAllCommand } from './re-encrypt-all';
import { patchManifestCommand } from './patch-manifest';
import { kmsCommand } from './kms';
import { initCommand } from './init';
import { waitApiserverCommand } from './wait-apiserver';
import { statusCommand } from './status';
import { rotateKeyCommand } from './rotate-key';
import { disableCommand } from './disable';
import { rollbackCommand } from './rollback';
import { keysCommand } from './keys';
import { verifySnapshotCommand } from './verify-snapshot';

/** Every subcommand, in the order `--help` lists them. Command modules stay light: heavy code
 * (Kubernetes client, etcd, gRPC) is imported inside their actions. */
export const commands: CommandModule[] = [generateKeyCommand, writeConfigCommand, validateConfigCommand, reEncryptAllCommand, patchManifestCommand, kmsCommand, initCommand, waitApiserverCommand, statusCommand, rotateKeyCommand, disableCommand, rollbackCommand, keysCommand, verifySnapshotCommand];
