"""Child process of the durability test: produces recognition events through the real outbox and MQTT
link, one every `interval` seconds, printing each index once it is stored; then flushes and exits.

    python tests/durability_publisher.py PORT OUTBOX_DB TOTAL START INTERVAL
"""

import sys
import time

from edge.mqtt.link import MqttLink, MqttOptions
from edge.mqtt.messages import RecognitionEvent
from edge.mqtt.outbox import Outbox, OutboxOptions


def main() -> int:
    port, outbox_path, total, start, interval = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                                  int(sys.argv[4]), float(sys.argv[5]))
    outbox = Outbox(OutboxOptions(path=outbox_path, fsync=False))
    link = MqttLink(MqttOptions(host="127.0.0.1", port=port, device_id="dur", reconnect_min_s=0.5,
                                reconnect_max_s=1.0, keepalive_s=5), outbox).start()
    for i in range(start, total):
        link.publish_event(RecognitionEvent("recognized", "alice", "accept", score=0.9, id=f"ev{i:04d}",
                                            device="dur"))
        print(i, flush=True)
        time.sleep(interval)
    ok = link.flush(timeout=60)
    link.close(flush_timeout=1)
    print("flushed" if ok else "not flushed", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
