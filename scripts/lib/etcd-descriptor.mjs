// etcd's gRPC API (etcd3's rpc.proto with its imports) as the JSON descriptor @grpc/proto-loader's
// fromJSON takes, parsed the way etcd3 parses it (keepCase), for the single executable.
import protobuf from 'protobufjs';

export function etcdDescriptorJson(rpcProto) {
  const root = new protobuf.Root().loadSync(rpcProto, { keepCase: true });
  root.resolveAll();
  return JSON.stringify(root.toJSON());
}
