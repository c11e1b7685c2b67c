/** lua-cjson (Debian: lua-cjson; OpenResty bundles it). Use a private instance from `new()`. */
/** @noSelf */
interface CJson {
  encode(this: void, v: unknown): LuaMultiReturn<[string | undefined, string | undefined]>;
  decode(this: void, s: string): LuaMultiReturn<[any, string | undefined]>;
  encode_empty_table_as_object(this: void, v: boolean | "on" | "off"): void;
  encode_number_precision(this: void, n: number): void;
  encode_sparse_array(this: void, convert?: boolean, ratio?: number, safe?: number): void;
  decode_array_with_array_mt(this: void, on: boolean): void;
  empty_array: unknown;
  array_mt: object;
  empty_array_mt: object;
  null: unknown;
  new(this: void): CJson;
}

/** @noResolution */
declare module "cjson.safe" {
  export function encode(this: void, v: unknown): LuaMultiReturn<[string | undefined, string | undefined]>;
  export function decode(this: void, s: string): LuaMultiReturn<[any, string | undefined]>;
  function _new(this: void): CJson;
  export { _new as new };
}
