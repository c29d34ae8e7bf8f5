// Model params ask the server for the kind their widget hint names; upload params show the
// picture the server keeps, so thumbnails survive a reload.

import { describe, expect, it } from "vitest";
import { createModelLists, modelKind } from "../src/models";
import { thumbnailSource } from "../src/useUpload";

describe("model widgets", () => {
  it("a widget hint names the kind of model its list holds", () => {
    expect(modelKind("model:lora")).toBe("lora");
    expect(modelKind("model:text_encoder")).toBe("text_encoder");
    expect(modelKind("model")).toBe("");
    expect(modelKind("upload")).toBeNull();
    expect(modelKind(null)).toBeNull();
  });

  it("each kind is asked for once per editor, whatever the number of inputs showing it", async () => {
    const asked: string[] = [];
    const lists = createModelLists(async (kind) => {
      asked.push(kind);
      return [`a-${kind}`];
    });
    const [loras, again, vaes] = await Promise.all([lists("lora"), lists("lora"), lists("vae")]);
    expect([loras, again, vaes]).toEqual([["a-lora"], ["a-lora"], ["a-vae"]]);
    expect(asked).toEqual(["lora", "vae"]);
    // another editor has its own lists
    const other: string[] = [];
    await createModelLists(async (kind) => (other.push(kind), []))("lora");
    expect(other).toEqual(["lora"]);
  });
});

describe("upload thumbnails", () => {
  const local = new Map([["fresh.png", "blob:http://x/1"]]);
  const mine = (name: string) => local.get(name);

  it("a picture uploaded by this page shows its own copy; any other name comes from the server", () => {
    expect(thumbnailSource("fresh.png", mine)).toBe("blob:http://x/1");
    // after a reload the page has no copy: the server reads the upload back
    expect(thumbnailSource("0a1b2c.png", mine)).toBe("/api/uploads/0a1b2c.png");
    expect(thumbnailSource("sub dir/a#b.png", mine)).toBe("/api/uploads/sub%20dir/a%23b.png");
  });

  it("template refs, empty values, absolute paths and non-strings have no thumbnail", () => {
    for (const value of ["$image", "", "  ", "/etc/passwd", 5, null, undefined]) expect(thumbnailSource(value, mine)).toBeUndefined();
  });
});
