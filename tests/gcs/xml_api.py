"""A Google Cloud Storage test server for object_store's gcp client (gs:// tests).

object_store speaks only GCS's XML API, which gcp-storage-emulator serves only in
part: its PUT /{bucket}/{key} and GET /{bucket}/{key} send no ETag, Last-Modified
or x-goog-generation, and it has no HEAD, DELETE, listing, conditional writes or
multipart uploads there. This script starts the emulator as its `start` command
does and puts routes in front of its own for the bucket given, which add those on
the emulator's own storage (objects, generations, md5, crc32c, update times):

    PUT    /{bucket}/{key}                     x-goog-if-generation-match: 0 | N
    GET    /{bucket}/{key}   HEAD               Range: bytes=a-b | a- | -n
    DELETE /{bucket}/{key}
    GET    /{bucket}?list-type=2&prefix=&delimiter=&start-after=&continuation-token=&max-keys=
    POST   /{bucket}/{key}?uploads             PUT ?partNumber=N&uploadId=X
    POST   /{bucket}/{key}?uploadId=X          DELETE ?uploadId=X

Its JSON API still works as before. Requests are served on threads (object_store
sends several at once) and one lock guards the storage; bodies are read outside it.
It runs in the foreground, prints nothing, and is ready when GET / answers 200.

    gcs-venv/bin/python xml_api.py --host 127.0.0.1 --port PORT --data DIR --bucket NAME
"""

import argparse
import base64
import email.utils
import hashlib
import http.server
import io
import logging
import os
import re
import threading
import uuid
from datetime import datetime, timezone
from functools import partial
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse
from xml.etree import ElementTree as ET

from gcp_storage_emulator import server as emu
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

XMLNS = "http://doc.s3.amazonaws.com/2006-03-01"
LOCK = threading.Lock()
UPLOADS = {}  # multipart upload id -> {"key", "content_type", "parts": {number: bytes}}


def query(request):
    """The query string, keeping `?uploads` (the emulator's parse drops empty values)."""
    return {k: v[0] for k, v in parse_qs(urlparse(request.full_url).query, keep_blank_values=True).items()}


def quoted_md5(data):
    return '"{}"'.format(hashlib.md5(data).hexdigest())


def etag(obj):
    return '"{}"'.format(base64.b64decode(obj["md5Hash"]).hex())


def xml(response, root, status=HTTPStatus.OK):
    response.status = status
    response.write_file(ET.tostring(root, xml_declaration=True, encoding="UTF-8"), "application/xml")


def element(tag, children=(), **attrs):
    """An element with text children given as (tag, text) pairs or elements."""
    el = ET.Element(tag, attrs)
    for child in children:
        if isinstance(child, ET.Element):
            el.append(child)
        else:
            ET.SubElement(el, child[0]).text = str(child[1])
    return el


def error(response, status, code, message):
    xml(response, element("Error", [("Code", code), ("Message", message)]), status)


def current(storage, request):
    try:
        return storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        return None


def precondition_fails(request, obj):
    """x-goog-if-generation-match: 0 means the object must not exist, N its generation."""
    want = request.get_header("x-goog-if-generation-match")
    if want is None:
        return False
    return obj["generation"] != want if obj else want != "0"


def object_headers(response, obj):
    updated = datetime.strptime(obj["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    response["ETag"] = etag(obj)
    response["Last-Modified"] = email.utils.format_datetime(updated, usegmt=True)
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]
    response["x-goog-stored-content-length"] = str(obj["size"])
    response["x-goog-hash"] = "crc32c={},md5={}".format(obj["crc32c"], obj["md5Hash"])


def get_object(request, response, storage):
    """GET and HEAD (the handler drops a HEAD's body, Content-Length stays the object's)."""
    obj = current(storage, request)
    if obj is None or query(request).get("generation", obj["generation"]) != obj["generation"]:
        return error(response, HTTPStatus.NOT_FOUND, "NoSuchKey", "No such object.")
    if request.get_header("If-Match", etag(obj)) not in (etag(obj), "*"):
        return error(response, HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed", "If-Match")
    object_headers(response, obj)
    if request.get_header("If-None-Match") in (etag(obj), "*"):
        response.status = HTTPStatus.NOT_MODIFIED
        return
    data = storage.get_file(obj["bucket"], obj["name"])
    wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", request.get_header("Range", "").strip())
    if wanted and wanted.group(1) + wanted.group(2):
        first, last = wanted.groups()
        if not first:  # bytes=-n: the last n bytes
            first, last = max(len(data) - int(last), 0), len(data) - 1
        first, last = int(first), min(int(last or len(data) - 1), len(data) - 1)
        if first >= len(data) or last < first:
            response["Content-Range"] = "bytes */{}".format(len(data))
            return error(response, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "InvalidRange", "Range")
        response["Content-Range"] = "bytes {}-{}/{}".format(first, last, len(data))
        response.status = HTTPStatus.PARTIAL_CONTENT
        data = data[first : last + 1]
    response.write_file(data, obj.get("contentType") or "application/octet-stream")


def create(request, response, storage, data, content_type):
    """Stores `data` as the object, as the emulator's own XML upload does."""
    bucket, key = request.params["bucket_name"], request.params["object_id"]
    obj = objects._make_object_resource(request.base_url, bucket, key, content_type, str(len(data)))
    storage.create_file(bucket, key, data, objects._checksums(data, obj))
    response["ETag"] = etag(obj)
    response["x-goog-generation"] = obj["generation"]
    return obj


def put_object(request, response, storage):
    data = request.data or b""
    q = query(request)
    if "uploadId" in q:
        upload = UPLOADS.get(q["uploadId"])
        if upload is None:
            return error(response, HTTPStatus.NOT_FOUND, "NoSuchUpload", "No such upload.")
        upload["parts"][int(q["partNumber"])] = data
        response["ETag"] = quoted_md5(data)
        return
    if precondition_fails(request, current(storage, request)):
        return error(response, HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                     "At least one of the pre-conditions you specified did not hold.")
    create(request, response, storage, data, request.get_header("Content-Type", "application/octet-stream"))


def post_object(request, response, storage):
    q = query(request)
    key = request.params["object_id"]
    if "uploads" in q:
        upload_id = uuid.uuid4().hex
        content_type = request.get_header("Content-Type", "application/octet-stream")
        UPLOADS[upload_id] = {"key": key, "content_type": content_type, "parts": {}}
        result = [("Bucket", request.params["bucket_name"]), ("Key", key), ("UploadId", upload_id)]
        return xml(response, element("InitiateMultipartUploadResult", result, xmlns=XMLNS))
    upload = UPLOADS.get(q.get("uploadId"))
    if upload is None or upload["key"] != key:
        return error(response, HTTPStatus.NOT_FOUND, "NoSuchUpload", "No such upload.")
    data = []
    for part in ET.fromstring(request.data or b"<x/>").iter("Part"):
        content = upload["parts"].get(int(part.findtext("PartNumber")))
        if content is None or quoted_md5(content) != part.findtext("ETag").strip():
            return error(response, HTTPStatus.BAD_REQUEST, "InvalidPart", "A part is missing or changed.")
        data.append(content)
    if precondition_fails(request, current(storage, request)):
        return error(response, HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                     "At least one of the pre-conditions you specified did not hold.")
    del UPLOADS[q["uploadId"]]
    obj = create(request, response, storage, b"".join(data), upload["content_type"])
    result = [("Location", request.full_url.split("?")[0]), ("Bucket", obj["bucket"]),
              ("Key", key), ("ETag", etag(obj))]
    xml(response, element("CompleteMultipartUploadResult", result, xmlns=XMLNS))


def delete_object(request, response, storage):
    upload_id = query(request).get("uploadId")
    if upload_id is not None:
        UPLOADS.pop(upload_id, None)
    else:
        objects.delete(request, response, storage)
    if response.status != HTTPStatus.NOT_FOUND:
        response.status = HTTPStatus.NO_CONTENT


def list_objects(request, response, storage):
    """ListObjectsV2: keys after start-after and the continuation token, grouped into
    CommonPrefixes by the delimiter, max-keys (1000) entries a page."""
    q = query(request)
    bucket = request.params["bucket_name"]
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    after, token = q.get("start-after", ""), q.get("continuation-token", "")
    max_keys = int(q.get("max-keys", 1000))
    try:
        found, _ = storage.get_file_list(bucket, prefix or None)
    except NotFound:
        return error(response, HTTPStatus.NOT_FOUND, "NoSuchBucket", "No such bucket.")
    entries = []  # (key, object) or (common prefix, None), in key order
    for obj in found:
        name = obj["name"]
        if name <= after or name <= token or (delimiter and token.endswith(delimiter) and name.startswith(token)):
            continue
        rest = name[len(prefix):]
        if delimiter and delimiter in rest:
            common = prefix + rest.split(delimiter, 1)[0] + delimiter
            if not entries or entries[-1][0] != common:
                entries.append((common, None))
        else:
            entries.append((name, obj))
        if len(entries) > max_keys:
            break
    page, truncated = entries[:max_keys], len(entries) > max_keys
    result = [("Name", bucket), ("Prefix", prefix), ("KeyCount", len(page)),
              ("MaxKeys", max_keys), ("IsTruncated", str(truncated).lower())]
    if truncated:
        result.append(("NextContinuationToken", page[-1][0]))
    for key, obj in page:
        if obj is None:
            result.append(element("CommonPrefixes", [("Prefix", key)]))
        else:
            fields = [("Key", key), ("Generation", obj["generation"]), ("LastModified", obj["updated"]),
                      ("ETag", etag(obj)), ("Size", obj["size"])]
            result.append(element("Contents", fields))
    xml(response, element("ListBucketResult", result, xmlns=XMLNS))


def locked(handler):
    def run(request, response, storage):
        request.data  # read the body first, so that uploads do not wait for the lock
        with LOCK:
            handler(request, response, storage)
    return run


def xml_routes(bucket):
    # object_store percent-encodes every byte of the bucket name that is not a letter
    # or digit (cascade%2Dtest), which the emulator's own routes do not match.
    b = "".join(c if c.isalnum() else "(?:{}|(?i:%{:02X}))".format(re.escape(c), ord(c)) for c in bucket)
    return (
        (rf"^/(?P<bucket_name>{b})/?$", {"GET": list_objects}),
        (
            rf"^/(?P<bucket_name>{b})/(?P<object_id>.+)$",
            {"GET": get_object, "HEAD": get_object, "PUT": put_object,
             "POST": post_object, "DELETE": delete_object},
        ),
    )


class _NoBody(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        return len(b)


class RequestHandler(emu.RequestHandler):
    def do_HEAD(self):
        wfile = self.wfile
        try:
            emu.Router(self).handle("HEAD")
        finally:
            self.wfile = wfile

    def end_headers(self):
        super().end_headers()
        if self.command == "HEAD":
            self.wfile = _NoBody()


class ThreadingHTTPServer(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # with the default 5, a burst of connections gets some reset


class ThreadedAPI(emu.APIThread):
    """The emulator's API thread, serving each connection on a thread of its own."""

    def run(self):
        handler = partial(RequestHandler, self._storage)
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self.is_running.set()
        self._httpd.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="directory the emulator stores in")
    parser.add_argument("--bucket", required=True, help="bucket created at startup")
    args = parser.parse_args()

    logging.basicConfig(level=logging.CRITICAL)  # as `start --quiet`
    emu.HANDLERS = tuple(
        (regex, {method: locked(h) for method, h in handlers.items()})
        for regex, handlers in (*xml_routes(args.bucket), *emu.HANDLERS)
    )
    emu.APIThread = ThreadedAPI
    server = emu.create_server(args.host, args.port, default_bucket=args.bucket, data_dir=os.path.abspath(args.data))
    # Deletes are final, as in a bucket with soft delete off: no copies kept in _softdelete.
    server._storage.buckets[args.bucket]["softDeletePolicy"] = {"retentionDurationSeconds": "0"}
    server.run()


if __name__ == "__main__":
    main()
