// mqtt-device: a device publishing temperature readings over MQTT with MQTT.js (npm `mqtt`), as
// field devices on Node do: one reading per message, compact JSON on metrics/v1/<sensor id>, QoS 1,
// MQTT 5. It prints a JSON summary: each message's PUBACK reason code (0: the broker holds it).
//
//   node dist/mqtt-device.js [options] SENSOR_ID
//
// The readings default to the original system's scenario (10, 100, 97, 99, 10, 100, 107, 98), one
// second apart and ending now, each with its own time ("ts", milliseconds): sent again, a reading is
// stored once. See docs/mqtt.md for the topics, the payloads and an account (make device-credentials).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import mqtt from "mqtt";

const SCENARIO = "10,100,97,99,10,100,107,98";
const USAGE = `usage: mqtt-device [options] SENSOR_ID
  --broker URL           mqtt://127.0.0.1:1883 (this machine, no account; default) or mqtts://127.0.0.1:8883
  --ca FILE              the CA of the broker's certificate, for mqtts (e.g. .stack/tls/ca.pem)
  --username NAME        the device's account (make device-credentials), for mqtts
  --password SECRET      its password
  --values V,V,...       reading values, one message each (default ${SCENARIO})`;

function fail(message: string): never {
  console.error(`mqtt-device: ${message}\n${USAGE}`);
  process.exit(2);
}

const { values: options, positionals } = parseArgs({
  options: {
    broker: { type: "string", default: "mqtt://127.0.0.1:1883" },
    ca: { type: "string" },
    username: { type: "string" },
    password: { type: "string" },
    values: { type: "string", default: SCENARIO },
  },
  allowPositionals: true,
});
if (positionals.length !== 1) fail("one SENSOR_ID is required");
const sensorId = positionals[0];
const readings = options.values.split(",").map(Number);
if (readings.some((v) => !Number.isFinite(v))) fail(`--values ${options.values}: not numbers`);

const client = await mqtt.connectAsync(options.broker, {
  protocolVersion: 5,
  clientId: `mqtt-device-${sensorId}`,
  username: options.username,
  password: options.password,
  ca: options.ca ? readFileSync(options.ca) : undefined,
  reconnectPeriod: 0,
});
const topic = `metrics/v1/${sensorId}`;
const last = Date.now();
const acks: number[] = [];
for (const [i, value] of readings.entries()) {
  const ts = last - (readings.length - 1 - i) * 1000;
  const packet = await client.publishAsync(topic, JSON.stringify({ temperature: value, ts }), { qos: 1 });
  // The PUBACK of a QoS 1 message: its reason code (MQTT 5), absent when 0.
  acks.push((packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0);
}
await client.endAsync();
console.log(JSON.stringify({ sensorId, topic, sent: readings.length, reasonCodes: acks }));
