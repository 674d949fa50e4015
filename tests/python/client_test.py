"""A Python client of retouchd: generates stubs from proto/ with grpcio-tools,
submits an instance-matting job with Run and checks that it streams every
transition to SUCCESS. Run by tests/python.rs against a real server.

Usage: client_test.py GRPC_ADDR IMAGE_URL MASK_URL

With RETOUCH_TLS_CA set (a PEM file), it connects with TLS trusting that CA,
and with RETOUCH_TLS_CERT and RETOUCH_TLS_KEY also presents a client
certificate (mutual TLS).
"""

import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate_stubs(out_dir):
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [os.path.join("retouch", "v1", f) for f in ("jobs.proto", "matting.proto", "removal.proto")]
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out_dir)


def open_channel(addr):
    ca = os.environ.get("RETOUCH_TLS_CA")
    if not ca:
        return grpc.insecure_channel(addr)

    def read(name):
        path = os.environ.get(name)
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("RETOUCH_TLS_CA"),
        private_key=read("RETOUCH_TLS_KEY"),
        certificate_chain=read("RETOUCH_TLS_CERT"),
    )
    return grpc.secure_channel(addr, credentials)


def main():
    addr, image_url, mask_url = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as out_dir:
        generate_stubs(out_dir)
        from retouch.v1 import jobs_pb2, matting_pb2, matting_pb2_grpc

        with open_channel(addr) as channel:
            stub = matting_pb2_grpc.InstanceMattingStub(channel)
            request = matting_pb2.SubmitMattingRequest(
                tasks=[matting_pb2.MattingTask(image_url=image_url, mask_url=mask_url)]
            )
            statuses, seqs, result_urls = [], [], []
            for event in stub.Run(request, timeout=60):
                seqs.append(event.seq)
                kind = event.WhichOneof("kind")
                if kind == "accepted":
                    statuses.append(jobs_pb2.TaskStatus.Name(event.accepted.job.tasks[0].status))
                elif kind == "transition":
                    statuses.append(jobs_pb2.TaskStatus.Name(event.transition.current))
                    result_urls.extend(event.transition.result_urls)
            final = jobs_pb2.JobStatus.Name(event.job_status)

    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert statuses == ["TASK_STATUS_WAITING", "TASK_STATUS_RUNNING", "TASK_STATUS_SUCCESS"], statuses
    assert final == "JOB_STATUS_COMPLETED", final
    assert result_urls, "SUCCESS carries result URLs"
    print(json.dumps({"statuses": statuses, "final": final, "results": result_urls}))


if __name__ == "__main__":
    main()
