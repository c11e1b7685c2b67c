/** Chooses and validates the struct layout of the running nginx build. (stub: filled by the layout work) */
import { Layout } from "./types";
export { Layout } from "./types";

export function currentLayout(): LuaMultiReturn<[Layout | undefined, string | undefined]> {
  return $multi(undefined, "layouts not implemented yet");
}
