/**
 * Conversions between the contract's messages and the seed's plain objects: snake_case field
 * names, enums as short lowercase strings ("supervised", not TRAINING_TYPE_SUPERVISED), 64-bit
 * integers as numbers, timestamps as RFC 3339 strings. The Python client's facade makes the same
 * objects by the same rules (agent_training_client/plain.py), so both languages return equal data.
 */
import {
  fromJson,
  toJson,
  type DescEnum,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
  ScalarType,
} from "@bufbuild/protobuf";
import { AgentTrainingError } from "./errors.js";

/** A plain object in the seed's shape (JSON values; typed loosely so fields read naturally). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Plain = Record<string, any>;

const INT64_TYPES = new Set<ScalarType>([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

/** `TrainingStatus` -> `TRAINING_STATUS_`: the prefix protobuf style puts on every value. */
function enumPrefix(descriptor: DescEnum): string {
  return descriptor.name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase() + "_";
}

function shortEnumName(descriptor: DescEnum, value: JsonValue): JsonValue {
  const prefix = enumPrefix(descriptor);
  return typeof value === "string" && value.startsWith(prefix)
    ? value.slice(prefix.length).toLowerCase()
    : value;
}

function fullEnumName(descriptor: DescEnum, value: JsonValue, path: string): JsonValue {
  if (typeof value !== "string") return value;
  const full = value.toUpperCase().startsWith(enumPrefix(descriptor))
    ? value.toUpperCase()
    : enumPrefix(descriptor) + value.toUpperCase();
  if (descriptor.values.some((v) => v.name === full)) return full;
  const allowed = descriptor.values
    .slice(1)
    .map((v) => v.name.slice(enumPrefix(descriptor).length).toLowerCase());
  throw invalidArgument(`${path}: '${value}' is not one of ${allowed.join(", ")}`);
}

function invalidArgument(message: string): AgentTrainingError {
  return new AgentTrainingError({
    code: "INVALID_ARGUMENT",
    message,
    hint: "Use the seed's field names and values; docs/api.md lists them for each function.",
    retryable: false,
    trace_id: "",
    status: "INVALID_ARGUMENT",
  });
}

type Direction = "out" | "in";

function convertSingle(field: DescField, kind: string, value: JsonValue, dir: Direction, path: string): JsonValue {
  if (kind === "enum" && field.enum) {
    return dir === "out" ? shortEnumName(field.enum, value) : fullEnumName(field.enum, value, path);
  }
  if (kind === "message" && field.message && !field.message.typeName.startsWith("google.protobuf.")) {
    return convertObject(field.message, value, dir, path);
  }
  if (kind === "scalar" && dir === "out" && field.scalar !== undefined && INT64_TYPES.has(field.scalar)) {
    return Number(value);
  }
  return value;
}

function convertField(field: DescField, value: JsonValue, dir: Direction, path: string): JsonValue {
  switch (field.fieldKind) {
    case "list":
      if (!Array.isArray(value)) return value;
      return value.map((item, i) => convertSingle(field, field.listKind, item, dir, `${path}[${i}]`));
    case "map":
      if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
      return Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, convertSingle(field, field.mapKind, v, dir, `${path}.${k}`)]),
      );
    default:
      return convertSingle(field, field.fieldKind, value, dir, path);
  }
}

function convertObject(schema: DescMessage, value: JsonValue, dir: Direction, path: string): JsonValue {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const out: JsonObject = {};
  for (const [key, item] of Object.entries(value)) {
    const field = schema.fields.find((f) => f.name === key || f.jsonName === key);
    out[key] = field ? convertField(field, item, dir, path ? `${path}.${key}` : key) : item;
  }
  return out;
}

/** A message as a plain object: every field by its proto name, defaults included. */
export function toPlain<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Plain {
  const json = toJson(schema, message, { useProtoFieldName: true, alwaysEmitImplicit: true });
  return convertObject(schema, json, "out", "") as Plain;
}

/** A plain object in the seed's shape as a message; unknown fields and values are refused. */
export function fromPlain<Desc extends DescMessage>(schema: Desc, plain: object): MessageShape<Desc> {
  const json = convertObject(schema, plain as JsonValue, "in", "");
  try {
    return fromJson(schema, json);
  } catch (reason) {
    throw invalidArgument(reason instanceof Error ? reason.message : String(reason));
  }
}
