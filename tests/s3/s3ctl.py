"""What the S3 tests ask of a moto server beside cascade's own requests, with boto3:
make a bucket (with Object Lock enabled), and read back what the server recorded of
an object (its server-side encryption, storage class and lock) as one JSON line.

    moto-venv/bin/python s3ctl.py ENDPOINT create-bucket NAME [--object-lock]
    moto-venv/bin/python s3ctl.py ENDPOINT head NAME KEY
    moto-venv/bin/python s3ctl.py ENDPOINT delete-version NAME KEY
"""
import json
import sys

import boto3


def main():
    endpoint, verb, bucket = sys.argv[1:4]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    if verb == "create-bucket":
        s3.create_bucket(
            Bucket=bucket, ObjectLockEnabledForBucket="--object-lock" in sys.argv
        )
    elif verb == "head":
        h = s3.head_object(Bucket=bucket, Key=sys.argv[4])
        until = h.get("ObjectLockRetainUntilDate")
        print(
            json.dumps(
                {
                    "sse": h.get("ServerSideEncryption"),
                    "kms_key_id": h.get("SSEKMSKeyId"),
                    "storage_class": h.get("StorageClass", "STANDARD"),
                    "lock_mode": h.get("ObjectLockMode"),
                    "lock_until": until.timestamp() if until else None,
                }
            )
        )
    elif verb == "delete-version":
        # The version a lock protects: refused while it holds (no bypass asked).
        key = sys.argv[4]
        v = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=v)
            print(json.dumps({"deleted": True}))
        except s3.exceptions.ClientError as e:
            print(json.dumps({"deleted": False, "error": e.response["Error"]["Code"]}))
    else:
        sys.exit(f"unknown verb {verb}")


if __name__ == "__main__":
    main()
